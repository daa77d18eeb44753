"""roomkey.loqed."""
