"""What runs under every layer: the device mesh and its sharding rules (`parallel`), several
processes (`distributed`), checkpoints, atomic files and JSON, the workdir's file names, the
memory planner's library half (`planner`) and FLOP counts. Imports nothing else of uqa_jax."""
