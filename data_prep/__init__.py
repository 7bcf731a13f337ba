"""Command-line converters and checkers for data sets (clients of the library, never imported by it)."""
