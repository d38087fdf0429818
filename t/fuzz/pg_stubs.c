/*
 * pg_stubs.c
 *		The few backend symbols the code under fuzzing needs when linked,
 *		outside the server, against PostgreSQL's frontend libpgcommon and
 *		libpgport (which bring the JSON parser, StringInfo, psprintf and
 *		the encoding tables):
 *
 *		- the palloc family, as one list of malloc'd chunks that
 *		  fuzz_memory_reset() frees after each input, as resetting a memory
 *		  context would (libpgcommon's fe_memutils would only leak);
 *		- GetDatabaseEncoding() and pg_verify_mbstr(), over the encoding the
 *		  harness chose;
 *		- ereport/elog and Assert: reaching an ERROR (or worse) or a failed
 *		  assertion aborts, which the fuzzer reports as a crash; these parsers
 *		  must never raise one over channel bytes.
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "pg_stubs.h"

int			fuzz_database_encoding = PG_UTF8;

/* ---------------------------------------------------------------- memory */

/* A palloc'd chunk: a header linking it into the list of live chunks. */
typedef struct Chunk
{
	struct Chunk *prev;
	struct Chunk *next;
	Size		size;
	/* 16-byte alignment of what follows, as malloc gives */
	char		data[] pg_attribute_aligned(16);
} Chunk;

static Chunk *live_chunks = NULL;

/* Frees every chunk palloc'd since the last reset. */
void
fuzz_memory_reset(void)
{
	while (live_chunks)
	{
		Chunk	   *next = live_chunks->next;

		free(live_chunks);
		live_chunks = next;
	}
}

/* Links a new chunk of size bytes, aborting if malloc fails. */
static void *
chunk_alloc(Size size, bool zero)
{
	Chunk	   *c = zero ? calloc(1, sizeof(Chunk) + size) : malloc(sizeof(Chunk) + size);

	if (c == NULL)
		abort();
	c->size = size;
	c->prev = NULL;
	c->next = live_chunks;
	if (live_chunks)
		live_chunks->prev = c;
	live_chunks = c;
	return c->data;
}

/* The chunk holding pointer p. */
static Chunk *
chunk_of(void *p)
{
	return (Chunk *) ((char *) p - offsetof(Chunk, data));
}

/* Unlinks and frees the chunk holding p. */
void
pfree(void *p)
{
	Chunk	   *c = chunk_of(p);

	if (c->prev)
		c->prev->next = c->next;
	else
		live_chunks = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

/* palloc(): a new chunk. */
void *
palloc(Size size)
{
	return chunk_alloc(size, false);
}

/* palloc0(): a new zeroed chunk. */
void *
palloc0(Size size)
{
	return chunk_alloc(size, true);
}

/* palloc_extended(): only MCXT_ALLOC_ZERO matters here. */
void *
palloc_extended(Size size, int flags)
{
	return chunk_alloc(size, (flags & MCXT_ALLOC_ZERO) != 0);
}

/* A new chunk with the old one's bytes (as many as fit); the old freed. */
void *
repalloc(void *pointer, Size size)
{
	Chunk	   *old = chunk_of(pointer);
	void	   *p = chunk_alloc(size, false);

	memcpy(p, pointer, Min(old->size, size));
	pfree(pointer);
	return p;
}

/* pstrdup(): a palloc'd copy. */
char *
pstrdup(const char *in)
{
	return pnstrdup(in, strlen(in));
}

/* pnstrdup(): a palloc'd copy of at most len bytes, NUL-terminated. */
char *
pnstrdup(const char *in, Size len)
{
	char	   *out;

	len = strnlen(in, len);
	out = palloc(len + 1);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

/* ---------------------------------------------------------------- encoding */

/* The encoding the harness chose. */
int
GetDatabaseEncoding(void)
{
	return fuzz_database_encoding;
}

/* The backend's check, on libpgcommon's tables; never raises an ERROR. */
bool
pg_verify_mbstr(int encoding, const char *mbstr, int len, bool noError)
{
	if (!noError)
		abort();
	return pg_encoding_verifymbstr(encoding, mbstr, len) == len;
}

/* ---------------------------------------------------------------- errors */

/* An ERROR or worse aborts; lesser levels are not reported. */
bool
errstart(int elevel, const char *domain)
{
	if (elevel >= ERROR)
		abort();
	return false;
}

/* As errstart(). */
bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

/* Never reached: errstart() never returns true. */
void
errfinish(const char *filename, int lineno, const char *funcname)
{
}

/* A failed Assert(): says which, and aborts. */
void
ExceptionalCondition(const char *conditionName, const char *errorType,
					 const char *fileName, int lineNumber)
{
	fprintf(stderr, "%s(\"%s\") failed at %s:%d\n", errorType, conditionName,
			fileName, lineNumber);
	abort();
}
