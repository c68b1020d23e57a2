# seed 004: 进程pid (the notes' `ps.getpid()` typo fixed to os.getpid())
# ruff: noqa  -- kept as the notes wrote it (one-line imports, % formats, fullwidth punctuation)
from multitask import Process
import os
import time


def run_proc():
    '''子进程需要执行的代码'''
    print('子进程运行中，pid=%d...' % os.getpid())  # os.getpid获取当前进程的进程号
    print('子进程将要结束...')


if __name__ == '__main__':
    print('父进程pid: %d ' % os.getpid())
    p = Process(target=run_proc)
    p.start()
    p.join()
