# seed 003: 进程优先级 -- `nice -9 python3 while.py` becomes Process(nice=...)
# ruff: noqa  -- kept as the notes wrote it (one-line imports, % formats, fullwidth punctuation)
import os
import multitask as mp


def show():
    print("child nice", os.getpriority(os.PRIO_PROCESS, 0))


if __name__ == "__main__":
    p = mp.Process(target=show, nice=9)
    p.start()
    p.join()
