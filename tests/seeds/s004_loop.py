# seed 004: 进程的创建 -- the two `while True` loops, bounded to 3 rounds (sleep 1 -> 0.01)
# ruff: noqa  -- kept as the notes wrote it (one-line imports, % formats, fullwidth punctuation)
from multitask import Process
import time


def run_proc():
    '''子进程需要执行的代码'''
    for _ in range(3):
        print('---2---', flush=True)
        time.sleep(0.01)


if __name__ == '__main__':
    p = Process(target=run_proc)
    p.start()
    for _ in range(3):
        print('---1---', flush=True)
        time.sleep(0.01)
    p.join()
