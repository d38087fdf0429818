/*
 * http_util.h
 *		HTTP helpers for drivers, in palloc'd memory (the engine, http.c,
 *		only mallocs): response header lookup, URL escaping and joining,
 *		and URL checks.
 */
#ifndef PAYSYNC_HTTP_UTIL_H
#define PAYSYNC_HTTP_UTIL_H

#include "postgres.h"

#include "http.h"

extern char *http_header(const HttpResult *result, const char *name);
extern char *http_escape(const char *text);
extern char *http_escape_segment(const char *text);
extern char *url_join(const char *base_url, const char *path);
extern bool http_url_valid(const char *url, char *error, size_t errlen);
extern bool http_proxy_url_valid(const char *url, char *error, size_t errlen);

#endif							/* PAYSYNC_HTTP_UTIL_H */
