"""What a run may say and how it is read: the valid names (`choices`), config blocks as dataclasses
with one accessor (`blocks.read`), and the stage recipes (`recipes`). Imports only `runtime/`."""
