"""The order libstdc++'s std::sort leaves: what the forks' C++ does with equal scores.

The SSD fork's keep_top_k (SortScorePairDescend) and MobileNet-YOLO's detection outputs
(BoxSortDecendScore) sort with `std::sort` and a `>` comparator; with equal keys the result
depends on the algorithm, so reproducing the forks' rows needs the algorithm itself.
"""
from __future__ import annotations

import numpy as np


_S_THRESHOLD = 16


def std_sort_order(keys: np.ndarray) -> np.ndarray:
    """The permutation libstdc++'s std::sort (GCC >= 4.9: introsort, median of
    first+1/mid/last-1 moved to first, heapsort past depth 2·lg n, final insertion sort)
    leaves a vector in, sorted by `a > b` on keys: the fork's BoxSortDecendScore.
    Without equal keys this is just the descending order."""
    n = len(keys)
    if n < 2:
        return np.arange(n)
    if len(np.unique(keys)) == n:
        return np.argsort(-keys.astype(np.float64), kind="stable")
    k = keys.tolist()
    a = list(range(n))

    def comp(i, j):   # comp(*i, *j) on positions of `a`
        return k[a[i]] > k[a[j]]

    def comp_v(v, j):  # comp(value, *j)
        return k[v] > k[a[j]]

    def comp_jv(j, v):  # comp(*j, value)
        return k[a[j]] > k[v]

    def push_heap(first, hole, top, value):
        parent = (hole - 1) // 2
        while hole > top and comp_jv(first + parent, value):
            a[first + hole] = a[first + parent]
            hole = parent
            parent = (hole - 1) // 2
        a[first + hole] = value

    def adjust_heap(first, hole, length, value):
        top = hole
        second = hole
        while second < (length - 1) // 2:
            second = 2 * (second + 1)
            if comp(first + second, first + second - 1):
                second -= 1
            a[first + hole] = a[first + second]
            hole = second
        if (length & 1) == 0 and second == (length - 2) // 2:
            second = 2 * (second + 1)
            a[first + hole] = a[first + second - 1]
            hole = second - 1
        push_heap(first, hole, top, value)

    def heap_sort(first, last):
        length = last - first
        if length >= 2:
            parent = (length - 2) // 2
            while True:
                adjust_heap(first, parent, length, a[first + parent])
                if parent == 0:
                    break
                parent -= 1
        while last - first > 1:
            last -= 1
            value = a[last]
            a[last] = a[first]
            adjust_heap(first, 0, last - first, value)

    def median_to_first(result, x, y, z):
        if comp(x, y):
            if comp(y, z):
                a[result], a[y] = a[y], a[result]
            elif comp(x, z):
                a[result], a[z] = a[z], a[result]
            else:
                a[result], a[x] = a[x], a[result]
        elif comp(x, z):
            a[result], a[x] = a[x], a[result]
        elif comp(y, z):
            a[result], a[z] = a[z], a[result]
        else:
            a[result], a[y] = a[y], a[result]

    def unguarded_partition(first, last, pivot):
        while True:
            while comp(first, pivot):
                first += 1
            last -= 1
            while comp(pivot, last):
                last -= 1
            if not first < last:
                return first
            a[first], a[last] = a[last], a[first]
            first += 1

    def introsort_loop(first, last, depth):
        while last - first > _S_THRESHOLD:
            if depth == 0:
                heap_sort(first, last)
                return
            depth -= 1
            mid = first + (last - first) // 2
            median_to_first(first, first + 1, mid, last - 1)
            cut = unguarded_partition(first + 1, last, first)
            introsort_loop(cut, last, depth)
            last = cut

    def unguarded_linear_insert(last):
        val = a[last]
        nxt = last - 1
        while comp_v(val, nxt):
            a[last] = a[nxt]
            last = nxt
            nxt -= 1
        a[last] = val

    def insertion_sort(first, last):
        for i in range(first + 1, last):
            if comp(i, first):
                val = a[i]
                a[first + 1:i + 1] = a[first:i]
                a[first] = val
            else:
                unguarded_linear_insert(i)

    introsort_loop(0, n, 2 * (n.bit_length() - 1))
    if n > _S_THRESHOLD:
        insertion_sort(0, _S_THRESHOLD)
        for i in range(_S_THRESHOLD, n):
            unguarded_linear_insert(i)
    else:
        insertion_sort(0, n)
    return np.asarray(a, dtype=np.int64)
