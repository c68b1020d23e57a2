# seed 001: 进程池 -- apply_async returns an event object (get()), map returns the list
# ruff: noqa  -- kept as the notes wrote it (one-line imports, % formats, fullwidth punctuation)
from multitask import Pool
import time


def fun(x):
    time.sleep(0.01)
    return x * x


if __name__ == "__main__":
    pool = Pool(2)
    results = [pool.apply_async(fun, (i,)) for i in range(5)]
    pool.close()
    pool.join()
    print([r.get() for r in results], all(r.successful() for r in results))
    with Pool(2) as pool:
        print(pool.map(fun, range(6)))
        print(pool.apply(fun, (7,)))
