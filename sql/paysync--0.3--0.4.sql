/* paysync--0.3--0.4.sql: 0.4, TLS as channels speak it and refunds */

\echo Use "ALTER EXTENSION paysync UPDATE TO '0.4'" to load this file. \quit

/*
 * Open until the last 0.4 issue is done.  Each part below starts with a
 * banner naming what it is for; a part owns its objects.
 */
