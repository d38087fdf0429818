/*
 * pg_stubs.h
 *		What the fuzz harnesses use of pg_stubs.c: the database encoding the
 *		code under test sees, and the reset of everything palloc'd while one
 *		input ran (the backend's memory context reset, in miniature).
 */
#ifndef PAYSYNC_FUZZ_PG_STUBS_H
#define PAYSYNC_FUZZ_PG_STUBS_H

extern int	fuzz_database_encoding;

extern void fuzz_memory_reset(void);

#endif							/* PAYSYNC_FUZZ_PG_STUBS_H */
