/*
 * http_util.c
 *		HTTP helpers for drivers.  Unlike the engine (http.c), everything
 *		here runs in a backend context: results are palloc'd and failures
 *		are ereport'ed.  libcurl is used only for its URL escaping and
 *		parsing.
 */
#include "postgres.h"

#include <curl/curl.h>

#include "http_util.h"

/*
 * The value of response header name (case-insensitive), palloc'd, or NULL.
 * Surrounding blanks are trimmed; the first occurrence wins.
 */
char *
http_header(const HttpResult *result, const char *name)
{
	size_t		name_len = strlen(name);
	const char *line = result->headers;

	while (line && *line)
	{
		const char *end = strstr(line, "\r\n");
		size_t		len = end ? (size_t) (end - line) : strlen(line);

		if (len > name_len && line[name_len] == ':' &&
			pg_strncasecmp(line, name, name_len) == 0)
		{
			const char *v = line + name_len + 1;
			const char *v_end = line + len;

			while (v < v_end && (*v == ' ' || *v == '\t'))
				v++;
			while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t'))
				v_end--;
			return pnstrdup(v, v_end - v);
		}
		line = end ? end + 2 : NULL;
	}
	return NULL;
}

/* URL-encodes text (palloc'd result) with libcurl. */
char *
http_escape(const char *text)
{
	char	   *escaped = curl_easy_escape(NULL, text, 0);
	char	   *result;

	if (escaped == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("libcurl could not escape a URL part.")));
	result = pstrdup(escaped);
	curl_free(escaped);
	return result;
}

/*
 * URL-encodes text as one whole path segment.  Besides what http_escape()
 * encodes, a segment that is "." or ".." has its dots encoded too: libcurl
 * removes dot segments from the path it sends, so "/orders/.." would
 * otherwise ask for "/" and not for the order "..".
 */
char *
http_escape_segment(const char *text)
{
	if (strcmp(text, ".") == 0)
		return pstrdup("%2E");
	if (strcmp(text, "..") == 0)
		return pstrdup("%2E%2E");
	return http_escape(text);
}

/*
 * base_url and path joined with exactly one slash between them, however
 * many either side brings.
 */
char *
url_join(const char *base_url, const char *path)
{
	size_t		len = strlen(base_url);

	while (len > 0 && base_url[len - 1] == '/')
		len--;
	while (*path == '/')
		path++;
	return psprintf("%.*s/%s", (int) len, base_url, path);
}

/*
 * Checks with libcurl's URL parser that url is a whole URL with a host, of
 * one of the schemes listed (lower case, NULL-terminated; schemes_text says
 * them in the message).  On failure writes a sentence saying why (never
 * holding the URL) into error.
 */
static bool
url_valid(const char *url, const char *const *schemes, const char *schemes_text,
		  char *error, size_t errlen)
{
	CURLU	   *parsed = curl_url();
	CURLUcode	rc;
	char	   *scheme = NULL;
	char	   *host = NULL;
	const char *sep = strstr(url, "://");
	bool		scheme_ok = false;
	bool		ok = false;

	if (parsed == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory"),
				 errdetail("libcurl could not parse a URL.")));
	for (int i = 0; sep != NULL && schemes[i]; i++)
		if ((size_t) (sep - url) == strlen(schemes[i]) &&
			pg_strncasecmp(url, schemes[i], sep - url) == 0)
			scheme_ok = true;
	rc = curl_url_set(parsed, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
	/* libcurl forgives "http:/host" and "https:///host"; we do not */
	if (!scheme_ok)
		snprintf(error, errlen, "Only %s URLs are allowed.", schemes_text);
	else if (sep[3] == '/' || sep[3] == '\0')
		snprintf(error, errlen, "The URL has no host.");
	else if (rc != CURLUE_OK)
		snprintf(error, errlen, "The URL does not parse: %s.", curl_url_strerror(rc));
	else if (curl_url_get(parsed, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
		snprintf(error, errlen, "Only %s URLs are allowed.", schemes_text);
	else if (curl_url_get(parsed, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0')
		snprintf(error, errlen, "The URL has no host.");
	else
		ok = true;
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(parsed);
	return ok;
}

/* Checks that url is a whole http(s) URL with a host (see url_valid). */
bool
http_url_valid(const char *url, char *error, size_t errlen)
{
	static const char *const schemes[] = {"http", "https", NULL};

	return url_valid(url, schemes, "http:// and https://", error, errlen);
}

/* Checks that url is a proxy URL paysync takes (see url_valid). */
bool
http_proxy_url_valid(const char *url, char *error, size_t errlen)
{
	static const char *const schemes[] = {"http", "https", "socks5h", NULL};

	return url_valid(url, schemes, "http://, https:// and socks5h://", error, errlen);
}
