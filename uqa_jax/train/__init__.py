"""The stages `main` runs, one module each; each reads and writes only the workdir."""
