"""The ``roomkey`` command line."""
