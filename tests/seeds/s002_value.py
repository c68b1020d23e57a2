# seed 002: 共享内存 -- boy and girl update one shared Value (sleep 0.2 -> 0.001).
# ruff: noqa  -- kept as the notes wrote it (one-line imports, % formats, fullwidth punctuation)
# The notes' version races (money.value += is not atomic); the lesson's fix is the lock.
from multitask import Process, Value
import time
import random

# 创建共享内存
money = Value('i', 5000)
random.seed(1)
ups = [random.randint(1, 1500) for _ in range(30)]
downs = [random.randint(100, 1200) for _ in range(30)]


def boy():
    for i in range(30):
        time.sleep(0.001)
        # 对value属性操作,即操作共享内存
        with money.get_lock():
            money.value += ups[i]


def girl():
    for i in range(30):
        time.sleep(0.001)
        with money.get_lock():
            money.value -= downs[i]


b = Process(target=boy)
g = Process(target=girl)
b.start()
g.start()
b.join()
g.join()
print("一个月余额:", money.value)
print("expected:", 5000 + sum(ups) - sum(downs))
