"""Running a loaded model: device and memory planning, generation, LLM backends, chats, and the
``LlamaVid`` front door with ``load_model``, which every front end (CLI, server, apps, evaluation) calls."""
