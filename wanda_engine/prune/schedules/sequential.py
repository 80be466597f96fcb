"""`--schedule sequential`: placeholder until the sequential schedule lands."""
