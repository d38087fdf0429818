/*
 * tls.h
 *		TLS material of a channel, parsed once through OpenSSL: a trust store
 *		(its ca_cert, or the system store) and a client identity (client_cert
 *		and client_key), and how they are put on the SSL_CTX libcurl makes
 *		for a new connection.  No PostgreSQL dependency: objects are
 *		OpenSSL's or malloc'd, errors are written to a caller's buffer and
 *		never hold key material.
 */
#ifndef PAYSYNC_TLS_H
#define PAYSYNC_TLS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct TlsMaterial TlsMaterial;

/* Which option a client identity is wrong in. */
typedef enum TlsIdentityProblem
{
	TLS_IDENTITY_OK,
	TLS_IDENTITY_BAD_CERT,		/* client_cert does not parse */
	TLS_IDENTITY_BAD_KEY,		/* client_key does not parse */
	TLS_IDENTITY_MISMATCH		/* the key is not the certificate's */
} TlsIdentityProblem;

extern TlsMaterial *tls_material_new(void);
extern void tls_material_free(TlsMaterial *material);
extern int	tls_trust_from_pem(TlsMaterial *material, const char *pem,
							   char *error, size_t errlen);
extern int	tls_trust_from_file(TlsMaterial *material, const char *path,
								char *error, size_t errlen);
extern bool tls_has_trust(const TlsMaterial *material);
extern bool tls_has_identity(const TlsMaterial *material);
extern TlsIdentityProblem tls_identity_from_pem(TlsMaterial *material,
												const char *cert_pem,
												const char *key_pem,
												char *error, size_t errlen);
extern bool tls_apply(void *ssl_ctx, const TlsMaterial *trust,
					  const TlsMaterial *identity);
/* What a failed verification of the server's certificate comes to. */
typedef enum TlsVerifyClass
{
	TLS_VERIFY_OTHER,
	TLS_VERIFY_EXPIRED,
	TLS_VERIFY_NOT_YET_VALID,
	TLS_VERIFY_UNTRUSTED		/* no trusted CA issued it */
} TlsVerifyClass;

extern const char *tls_verify_problem(long verify_result);
extern TlsVerifyClass tls_verify_class(long verify_result);
extern long tls_trust_loads(void);

#endif							/* PAYSYNC_TLS_H */
