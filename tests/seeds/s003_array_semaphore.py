# seed 003: 共享内存 Array (value for 'c' arrays, iteration, index) and 信号量 Semaphore
# ruff: noqa  -- kept as the notes wrote it (one-line imports, % formats, fullwidth punctuation)
from multitask import Process, Array, Semaphore
import time

shm = Array('i', [1, 2, 3, 4, 5])
text = Array('c', b'hello')


def fun():
    for i in shm:
        print(i, end=" ")
    print()
    shm[2] = 1000
    text.value = b'world'


p = Process(target=fun)
p.start()
p.join()
print(shm[2], list(shm), text.value)

sem = Semaphore(3)


def worker():
    sem.acquire()
    time.sleep(0.01)
    sem.release()


print("sem", sem.get_value())
jobs = [Process(target=worker) for _ in range(4)]
for j in jobs:
    j.start()
for j in jobs:
    j.join()
print("sem", sem.get_value())
