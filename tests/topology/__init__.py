"""Tests of topology files: the schema, the loader, the cross-checks and their messages."""
