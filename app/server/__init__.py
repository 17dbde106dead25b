"""The local server: an OpenAI-compatible API and the web UI in one process (``llamavid serve``,
``llamavid web``). ``docs/server.md`` describes the routes, the content parts and the security rules.

Modules: ``settings`` (what a server is started with; imported by the command line, so nothing
heavy), ``engine`` (the one queue in front of the model), ``protocol`` (the chat request and its
content parts), ``completions`` (the chat route: JSON or server-sent events), ``routes`` (models,
the library, a film's video, conversations, health, sign-in), ``security`` (the guard in front of
every route), ``errors`` (OpenAI's error shape), ``indexing`` (the library tab's indexer child),
``views`` (what the web UI's panels show, without Gradio), ``ui`` (the Gradio pages: layout and
handlers), ``app`` (``create_app``, ``start``, ``serve``).
"""
