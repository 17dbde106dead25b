"""The movie library indexer: folders of films into SQLite plus per-movie EVA feature caches.

Writers: ``llamavid index ...`` (cli.index) and the job runner (indexer.runner), through
the queries of indexer.store. Readers (the apps, the chat): indexer.library.
"""
