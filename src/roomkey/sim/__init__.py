"""roomkey.sim."""
