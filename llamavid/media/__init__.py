"""Media: the first step of the data path, a file into frames the model can read.

``probe`` (what a file holds), ``decode`` (frames at 1 fps, never a whole film in memory),
``load`` (a user's image or short clip, with errors naming the file), ``preprocess`` (CLIP pixels
for EVA). No torch model code here: the indexer, training and the chat all read media this way.
"""
