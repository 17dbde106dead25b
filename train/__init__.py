"""Training LLaMA-VID: the three stages of the reference, on one CPU, one GPU or many.

Modules, in the order a run uses them:

* :mod:`train.config` - stage presets (what is trained, lr, lengths, templates) and :class:`TrainArgs`
* :mod:`train.records`, :mod:`train.text`, :mod:`train.visual_inputs`, :mod:`train.dataset` - LLaVA JSON data
  to token ids, labels and visual inputs
* :mod:`train.validate` - the data checker (``llamavid train validate``)
* :mod:`train.init` - starting weights: Vicuna + EVA + InstructBLIP, or a previous stage's output
* :mod:`train.params`, :mod:`train.lora` - frozen / trained parts, LoRA and QLoRA
* :mod:`train.step` - one micro-batch to a loss; :mod:`train.sampler` - batches per rank
* :mod:`train.distributed` - torchrun, DDP, FSDP2; :mod:`train.checkpoint` - saves and resumes
* :mod:`train.trainer` - the loop; :mod:`train.progress` - what it shows and logs;
  :mod:`train.export` - a checkpoint as a model folder

The ``llamavid train`` command is :mod:`cli.train`. See docs/training.md for the commands.
Importing this package imports nothing heavy.
"""
