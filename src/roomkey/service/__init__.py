"""roomkey.service."""
