"""The built-in simulated LLM runtime: Ollama-, vLLM- and llama.cpp-like servers driven by a load model.

:mod:`simulator.engine` is the pure load model (slots, a FIFO queue, batched decode steps, a KV budget),
:mod:`simulator.profiles` holds each runtime's numbers, and :mod:`simulator.server` serves the real wire
protocols on top of one engine timer loop. ``python -m simulator --help`` lists the flags.
"""
