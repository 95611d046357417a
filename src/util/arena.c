/* arena.c — bump allocation in reusable chunks; see arena.h. */
#include <stdint.h>

#include "ortserve/alloc.h"
#include "util/arena.h"

struct osv_arena_chunk {
    osv_arena_chunk_t *next;
    size_t cap, used;
    _Alignas(64) unsigned char data[];
};

void osv_arena_init(osv_arena_t *a, size_t chunk_size, size_t limit)
{
    a->first = a->cur = NULL;
    a->chunk_size = chunk_size;
    a->limit = limit;
    a->total = 0;
}

static void *bump(osv_arena_chunk_t *c, size_t size, size_t align)
{
    size_t off = (c->used + align - 1) & ~(align - 1);
    if (off > c->cap || size > c->cap - off)
        return NULL;
    c->used = off + size;
    return c->data + off;
}

void *osv_arena_alloc(osv_arena_t *a, size_t size, size_t align)
{
    osv_arena_chunk_t *c;
    void *p;
    if (align == 0 || align > 64 || (align & (align - 1)))
        return NULL;
    for (c = a->cur; c; c = c->next) {
        if ((p = bump(c, size, align)) != NULL) {
            a->cur = c;
            return p;
        }
        if (c->next)
            c->next->used = 0;
    }
    size_t cap = size + 64 > a->chunk_size ? size + 64 : a->chunk_size;
    if (a->total + cap > a->limit || cap < size)
        return NULL;
    if (!(c = osv_malloc(sizeof *c + cap)))
        return NULL;
    c->cap = cap;
    c->used = 0;
    c->next = NULL;
    a->total += cap;
    /* Append after the current chunk's tail so reused chunks keep their order. */
    if (!a->first) {
        a->first = c;
    } else {
        osv_arena_chunk_t *t = a->cur ? a->cur : a->first;
        while (t->next)
            t = t->next;
        t->next = c;
    }
    a->cur = c;
    return bump(c, size, align);
}

void osv_arena_reset(osv_arena_t *a)
{
    a->cur = a->first;
    if (a->first)
        a->first->used = 0;
}

void osv_arena_reset_trim(osv_arena_t *a, size_t keep)
{
    osv_arena_chunk_t *c = a->first, *last = NULL;
    size_t kept = 0;
    while (c && kept + c->cap <= keep) {
        kept += c->cap;
        last = c;
        c = c->next;
    }
    if (last)
        last->next = NULL;
    else
        a->first = NULL;
    while (c) {
        osv_arena_chunk_t *n = c->next;
        osv_free(c);
        c = n;
    }
    a->total = kept;
    osv_arena_reset(a);
}

void osv_arena_free(osv_arena_t *a)
{
    osv_arena_chunk_t *c = a->first;
    while (c) {
        osv_arena_chunk_t *n = c->next;
        osv_free(c);
        c = n;
    }
    a->first = a->cur = NULL;
    a->total = 0;
}
