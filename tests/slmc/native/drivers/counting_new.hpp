// For the sampler test drivers: a global operator new that counts its calls in `allocations`, so a driver
// can assert that a call allocated nothing. Include in exactly one translation unit (the driver's).
#pragma once

#include <cstdlib>
#include <new>

static long allocations = 0;

void* operator new(std::size_t size) {
    ++allocations;
    if (void* p = std::malloc(size ? size : 1)) return p;
    throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
