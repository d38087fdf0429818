/*
 * tls_trust.c
 *		What a new HTTPS connection costs libcurl 7.88 + OpenSSL 3 in CPU,
 *		by the way the trusted CAs reach it: the choice src/http.c makes
 *		(see README, "TLS (0.4)").  N sequential requests, each on a new
 *		connection (FORBID_REUSE), to URL; prints CPU microseconds per
 *		connection for:
 *
 *		  bundle     CURLOPT_CAINFO = the bundle (CAPATH off), CA cache off:
 *		             the bundle parsed for every connection
 *		  ca-cache   the same with CURLOPT_CA_CACHE_TIMEOUT (one store per
 *		             multi handle, kept)
 *		  share      a CURLSH sharing TLS sessions and connections; the
 *		             bundle still parsed per connection (7.88 shares no
 *		             CA store)
 *		  blob       CURLOPT_CAINFO_BLOB (a channel's ca_cert as text):
 *		             parsed per connection, never cached
 *		  ctx-store  CURLOPT_SSL_CTX_FUNCTION putting one X509_STORE,
 *		             parsed once, on every connection (paysync's way)
 *		  ctx+share  ctx-store with a CURLSH of TLS sessions (resumption)
 *
 *		Build: gcc -O2 -o tls_trust bench/tls_trust.c -lcurl -lssl -lcrypto
 *		Run:   ./tls_trust URL BUNDLE.pem [N]
 *		(BUNDLE.pem: e.g. the system bundle with the test CA appended).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <curl/curl.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

static X509_STORE *store;

static size_t
discard(char *d, size_t s, size_t n, void *u)
{
	(void) d;
	(void) u;
	return s * n;
}

static CURLcode
ctx_cb(CURL *c, void *ctx, void *u)
{
	(void) c;
	(void) u;
	SSL_CTX_set1_cert_store((SSL_CTX *) ctx, store);
	return CURLE_OK;
}

static double
cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
		ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
}

int
main(int argc, char **argv)
{
	const char *modes[] = {"bundle", "ca-cache", "share", "blob", "ctx-store", "ctx+share"};
	const char *url;
	const char *bundle;
	int			n;
	char	   *pem;
	long		pem_len;
	FILE	   *f;

	if (argc < 3)
	{
		fprintf(stderr, "usage: tls_trust URL BUNDLE.pem [N]\n");
		return 2;
	}
	url = argv[1];
	bundle = argv[2];
	n = argc > 3 ? atoi(argv[3]) : 200;
	f = fopen(bundle, "rb");
	if (!f)
		return 1;
	fseek(f, 0, SEEK_END);
	pem_len = ftell(f);
	rewind(f);
	pem = malloc(pem_len + 1);
	if (fread(pem, 1, pem_len, f) != (size_t) pem_len)
		return 1;
	pem[pem_len] = '\0';
	fclose(f);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	store = X509_STORE_new();
	X509_STORE_load_file(store, bundle);

	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++)
	{
		CURLM	   *multi = curl_multi_init();
		CURLSH	   *share = NULL;
		int			ok = 0;
		double		t0;

		if (strstr(modes[m], "share"))
		{
			share = curl_share_init();
			curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
			curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
		}
		t0 = cpu_us();
		for (int i = 0; i < n; i++)
		{
			CURL	   *e = curl_easy_init();
			int			running = 1;
			CURLMsg    *msg;
			int			q;

			curl_easy_setopt(e, CURLOPT_URL, url);
			curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
			curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
			curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
			curl_easy_setopt(e, CURLOPT_CA_CACHE_TIMEOUT, strcmp(modes[m], "ca-cache") == 0 ? 86400L : 0L);
			if (strcmp(modes[m], "blob") == 0)
			{
				struct curl_blob blob = {pem, (size_t) pem_len, CURL_BLOB_COPY};

				curl_easy_setopt(e, CURLOPT_CAINFO, NULL);
				curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &blob);
			}
			else if (strncmp(modes[m], "ctx", 3) == 0)
			{
				curl_easy_setopt(e, CURLOPT_CAINFO, NULL);
				curl_easy_setopt(e, CURLOPT_SSL_CTX_FUNCTION, ctx_cb);
			}
			else
				curl_easy_setopt(e, CURLOPT_CAINFO, bundle);
			if (share)
				curl_easy_setopt(e, CURLOPT_SHARE, share);
			curl_multi_add_handle(multi, e);
			while (running)
			{
				curl_multi_perform(multi, &running);
				if (running)
					curl_multi_poll(multi, NULL, 0, 1000, NULL);
			}
			while ((msg = curl_multi_info_read(multi, &q)) != NULL)
				if (msg->msg == CURLMSG_DONE && msg->data.result == CURLE_OK)
					ok++;
			curl_multi_remove_handle(multi, e);
			curl_easy_cleanup(e);
		}
		printf("%-10s %7.0f us CPU per new connection (%d of %d answered)\n",
			   modes[m], (cpu_us() - t0) / n, ok, n);
		if (share)
			curl_share_cleanup(share);
		curl_multi_cleanup(multi);
	}
	return 0;
}
