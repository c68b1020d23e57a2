# seed 002: 消息队列 -- a producer and a consumer through a Queue (sleeps 1/1.5 -> 0.01)
# ruff: noqa  -- kept as the notes wrote it (one-line imports, % formats, fullwidth punctuation)
from multitask import Queue, Process
from time import sleep

q = Queue()


def fun1():
    for i in range(10):
        sleep(0.01)
        q.put((2, i))


def fun2():
    for i in range(10):
        sleep(0.015)
        a, b = q.get()
        print(a ** b)


p1 = Process(target=fun1)
p2 = Process(target=fun2)
p1.start()
p2.start()
p1.join()
p2.join()
