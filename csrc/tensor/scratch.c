#define _POSIX_C_SOURCE 200809L /* pthread keys under -std=c11 */
#include "scratch.h"

#include <pthread.h>
#include <stdlib.h>

#include "../common.h"

typedef struct {
    void *buf[GS_SCRATCH_SLOTS];
    size_t cap[GS_SCRATCH_SLOTS];
    int out[GS_SCRATCH_SLOTS]; /* the buffer is given out and not back yet */
} scratch_t;

static pthread_key_t key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int key_ok = 0;

static void release(void *p)
{
    scratch_t *s = p;
    for (int i = 0; i < GS_SCRATCH_SLOTS; i++) gs_free(s->buf[i]);
    free(s);
}

static void init(void) { key_ok = pthread_key_create(&key, release) == 0; }

static scratch_t *mine(void)
{
    pthread_once(&once, init);
    if (!key_ok) return NULL;
    scratch_t *s = pthread_getspecific(key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (s && pthread_setspecific(key, s) != 0) {
            free(s);
            s = NULL;
        }
    }
    return s;
}

void *gs_scratch_get(int slot, size_t bytes)
{
    scratch_t *s = bytes <= GS_SCRATCH_KEEP_MAX ? mine() : NULL;
    if (!s || s->out[slot]) return gs_alloc(bytes);
    if (s->cap[slot] < bytes) {
        gs_free(s->buf[slot]);
        s->buf[slot] = gs_alloc(bytes);
        s->cap[slot] = s->buf[slot] ? bytes : 0;
    }
    s->out[slot] = s->buf[slot] != NULL;
    return s->buf[slot];
}

void gs_scratch_put(int slot, void *p)
{
    scratch_t *s = p ? mine() : NULL;
    if (s && s->buf[slot] == p)
        s->out[slot] = 0;
    else
        gs_free(p); /* not kept: allocated for this call */
}
