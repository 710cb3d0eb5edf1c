"""The ``learndock`` command line."""
