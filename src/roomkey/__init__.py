"""roomkey: bookings open doors (Lockme reservations drive LOQED smart locks)."""

__version__ = "0.1.0"
