"""The `poodle demo` runner and report."""
