"""roomkey.lockme."""
