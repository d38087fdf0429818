/*
 * version.h
 *		The version of this library and the version of the extension's SQL
 *		objects it was written against.  A leaf header: any layer may
 *		include it.
 */
#ifndef PAYSYNC_VERSION_H
#define PAYSYNC_VERSION_H

/* This library's version, as sent in the User-Agent of every request. */
#define PAYSYNC_VERSION "0.4"
#define PAYSYNC_USER_AGENT "paysync/" PAYSYNC_VERSION

/*
 * The extension version (pg_extension.extversion) whose tables and
 * functions the SQL in storage.c expects.  The worker waits while the
 * installed extension has another version.
 */
#define PAYSYNC_SCHEMA_VERSION "0.4"

#endif							/* PAYSYNC_VERSION_H */
