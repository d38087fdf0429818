/*-------------------------------------------------------------------------
 *
 * mock_common.h
 *	  What the mock payment channels of the paysync tests share: fatal
 *	  errors, option numbers, the request log, text helpers (percent
 *	  decoding, JSON escaping, log words), per-id attempt and in-flight
 *	  counters (continued from an earlier log if asked), request
 *	  bodies, responses, the libmicrohttpd daemon's start and clean stop,
 *	  and SHA256withRSA signing with OpenSSL.
 *
 *	  Each mock_<name>.c is its own program linked with mock_common.o; a
 *	  program calls mock_init() first, with its name for messages.
 *
 * IDENTIFICATION
 *	  t/mock/mock_common.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef MOCK_COMMON_H
#define MOCK_COMMON_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <microhttpd.h>
#include <openssl/evp.h>

/* ---- start-up, the command line and fatal errors ---- */

/*
 * The options the mocks share, for their getopt_long() tables: --port N
 * (0, the default: any free port) and --log FILE in every mock, and
 * --latency-ms N in those that delay their answers.  mock_next_option()
 * stores them in mock_opt_port, mock_opt_log and mock_opt_latency_ms.
 */
#define MOCK_OPT_PORT		0x100
#define MOCK_OPT_LOG		0x101
#define MOCK_OPT_LATENCY	0x102

#define MOCK_LONGOPTS_COMMON \
	{"port", required_argument, NULL, MOCK_OPT_PORT}, \
	{"log", required_argument, NULL, MOCK_OPT_LOG}
#define MOCK_LONGOPT_LATENCY \
	{"latency-ms", required_argument, NULL, MOCK_OPT_LATENCY}

/* Largest --latency-ms. */
#define MOCK_MAX_LATENCY_MS	1000000000L

extern unsigned int mock_opt_port;
extern const char *mock_opt_log;
extern long mock_opt_latency_ms;

extern void mock_init(const char *progname);
extern void mock_die(const char *msg, const char *detail)
			__attribute__((noreturn));
extern long mock_parse_number(const char *opt, const char *s, long max);
extern int	mock_next_option(int argc, char **argv,
							 const struct option *longopts);
extern void mock_raise_fd_limit(void);

/* ---- clocks ---- */

extern uint64_t mock_monotonic_ns(void);
extern long long mock_timespec_us(const struct timespec *ts);
extern long long mock_now_us(void);

/* ---- the request log (--log) ---- */

extern void mock_log_open(const char *path);
extern bool mock_log_enabled(void);
extern void mock_log_write(const char *line, size_t len);
extern void mock_log_close(void);
extern size_t mock_log_token(char *dst, const char *src, size_t len);

/* ---- text ---- */

extern size_t mock_percent_decode(char *dst, const char *src, size_t len,
								  bool plus_is_space);
extern char *mock_percent_decode_dup(const char *src, size_t len,
									 bool plus_is_space);
extern size_t mock_json_escape(char *dst, const char *src);
extern char *mock_json_escape_dup(const char *src);
extern char *mock_format(const char *fmt,...)
			__attribute__((format(printf, 1, 2)));

/* ---- attempts counted per payment id ---- */

extern uint64_t mock_next_attempt(const char *id);
extern int64_t mock_id_enter(const char *id);
extern void mock_id_leave(const char *id);
extern long mock_attempts_from_log(const char *path);
extern void mock_reset_attempts(void);

/* ---- requests and their bodies ---- */

/* A request body as it arrives; data is NUL-terminated once non-empty. */
typedef struct MockBody
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		overflow;		/* more than the limit was sent */
} MockBody;

/*
 * What a mock keeps of a request.  The URI is kept only when the request
 * was made by mock_request_from_uri().
 */
typedef struct MockRequest
{
	struct timespec arrival;	/* CLOCK_REALTIME when it was made */
	char	   *uri;			/* request target as sent, or NULL */
	bool		started;		/* the access handler has seen it */
	MockBody	body;
} MockRequest;

extern bool mock_take_body(MockBody *body, const char *upload_data,
						   size_t *upload_data_size, size_t max,
						   bool truncate, enum MHD_Result *ret);
extern void mock_body_free(MockBody *body);
extern MockRequest *mock_request_begin(void **con_cls,
									   const char *upload_data,
									   size_t *upload_data_size,
									   size_t max_body,
									   enum MHD_Result *ret);
extern void *mock_request_from_uri(void *cls, const char *uri,
								   struct MHD_Connection *conn);
extern void mock_request_completed(void *cls, struct MHD_Connection *conn,
								   void **con_cls,
								   enum MHD_RequestTerminationCode toe);
extern size_t mock_unescape_nothing(void *cls, struct MHD_Connection *conn,
									char *s);

/* ---- responses ---- */

extern struct MHD_Response *mock_response(const char *body, size_t len,
										  enum MHD_ResponseMemoryMode mode,
										  const char *content_type);
extern enum MHD_Result mock_queue(struct MHD_Connection *conn,
								  unsigned int status,
								  struct MHD_Response *response);
extern enum MHD_Result mock_send(struct MHD_Connection *conn,
								 unsigned int status, const char *text,
								 const char *content_type);

/* ---- the daemon ---- */

extern void mock_block_stop_signals(void);
extern struct MHD_Daemon *mock_start_daemon(unsigned int flags,
											unsigned int port,
											MHD_AccessHandlerCallback handler,
											const struct MHD_OptionItem *options);
extern void mock_announce_port(struct MHD_Daemon *daemon);
extern void mock_wait_for_stop(void);
extern void mock_serve(unsigned int flags, unsigned int port,
					   MHD_AccessHandlerCallback handler,
					   const struct MHD_OptionItem *options);

/* ---- SHA256withRSA signatures (OpenSSL) ---- */

extern EVP_PKEY *mock_load_key(const char *path, bool private_key);
extern EVP_PKEY *mock_new_rsa_key(void);
extern int	mock_b64_decode(unsigned char *out, size_t out_size,
							const char *b64, size_t len);
extern char *mock_sign_b64(EVP_PKEY *key, const char *data, size_t len);
extern bool mock_verify_b64(EVP_PKEY *key, const char *data, size_t len,
							const char *signature_b64);

#endif							/* MOCK_COMMON_H */
