"""``python -m train ACTION ...`` = ``llamavid train ACTION ...``; for launchers that take a module.

    torchrun --nproc-per-node 8 -m train run --stage 2 --data chat.json --init OUT/stage1 --output OUT/stage2
"""
import sys

from llamavid.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
