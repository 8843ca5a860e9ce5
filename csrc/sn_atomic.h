/* Internal: the few atomic operations csrc/ needs on an int, portable to
 * gcc, clang (the __atomic builtins) and MSVC (Interlocked intrinsics and
 * __iso_volatile loads and stores), without C11 <stdatomic.h>, which MSVC
 * only has behind /experimental:c11atomics.
 *
 *   sn_atomic_load / sn_atomic_store   relaxed: a value shared between
 *       threads that no other memory depends on (settings, counters)
 *   sn_atomic_fetch_sub                relaxed; returns the old value
 *   sn_atomic_cas                      *p = desired if *p == expected, in
 *       one step (acquire and release); returns 1 if it swapped
 *   sn_atomic_release                  *p = 0, release: what this thread
 *       wrote before is seen by the next thread whose sn_atomic_cas takes
 *       the 0 (a flag guarding a resource: cas(p, 0, 1) takes it)
 *   sn_atomic_publish / sn_atomic_load_acquire   *p = v with release, and
 *       its acquire load: a thread that loads v sees what the publishing
 *       thread wrote before (data computed once, then read by all) */
#ifndef SN_ATOMIC_H
#define SN_ATOMIC_H

typedef int sn_atomic_int;

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
/* long and int are both 32 bits on Windows. The Interlocked functions are
 * full barriers, stronger than asked. */
static inline int sn_atomic_load(const sn_atomic_int *p)
{
    return __iso_volatile_load32((const volatile __int32 *)p);
}
static inline void sn_atomic_store(sn_atomic_int *p, int v)
{
    __iso_volatile_store32((volatile __int32 *)p, v);
}
static inline int sn_atomic_fetch_sub(sn_atomic_int *p, int v)
{
    return (int)_InterlockedExchangeAdd((volatile long *)p, -(long)v);
}
static inline int sn_atomic_cas(sn_atomic_int *p, int expected, int desired)
{
    return _InterlockedCompareExchange((volatile long *)p, desired, expected) == expected;
}
static inline void sn_atomic_release(sn_atomic_int *p)
{
    _InterlockedExchange((volatile long *)p, 0);
}
static inline void sn_atomic_publish(sn_atomic_int *p, int v)
{
    _InterlockedExchange((volatile long *)p, v);
}
static inline int sn_atomic_load_acquire(const sn_atomic_int *p)
{
    /* a compare-and-swap that never changes *p: a full barrier */
    return (int)_InterlockedCompareExchange((volatile long *)p, 0, 0);
}
#else
static inline int sn_atomic_load(const sn_atomic_int *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline void sn_atomic_store(sn_atomic_int *p, int v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}
static inline int sn_atomic_fetch_sub(sn_atomic_int *p, int v)
{
    return __atomic_fetch_sub(p, v, __ATOMIC_RELAXED);
}
static inline int sn_atomic_cas(sn_atomic_int *p, int expected, int desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}
static inline void sn_atomic_release(sn_atomic_int *p)
{
    __atomic_store_n(p, 0, __ATOMIC_RELEASE);
}
static inline void sn_atomic_publish(sn_atomic_int *p, int v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}
static inline int sn_atomic_load_acquire(const sn_atomic_int *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
#endif

#endif
