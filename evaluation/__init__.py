"""Benchmarks of the paper and long-video benchmarks, run through the project's own engine.

The layers of this package, from the files a benchmark publishes to the table a person reads:

* ``datafiles``: reading the official question files (JSON, JSONL, TSV, parquet) with messages that
  name the file and what is wrong with it;
* ``benchmarks``: one module per benchmark family; each turns its files into :class:`items.Item`
  (a prompt, the visual input it asks about, the ground truth) and scores answered items;
* ``visuals`` and ``films``: the visual input of a group of items (an image, a clip, or an indexed
  film's cached features with or without its subtitles);
* ``answering``: deterministic answers through :class:`llamavid.runtime.api.LlamaVid` (greedy text, or
  the option letter read from the first step's scores), one Q-Former pass per shared input;
* ``records``: the append-only answer log a run resumes from; ``judge``: judged scores through any
  OpenAI-compatible endpoint, cached on disk;
* ``runner``: the loop that ties them together; ``report``: results in JSON and Markdown, and two
  runs side by side.
"""
