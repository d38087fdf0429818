/*
 * tls.c
 *		A channel's TLS material through OpenSSL, parsed once when the
 *		channel is compiled (the system store once per process) and shared
 *		by every connection made with it: trusted CAs in an X509_STORE, a
 *		client certificate (with any chain after it) and its private key.
 *		tls_apply() hands them to the SSL_CTX libcurl creates for each new
 *		connection, so that no handshake parses a PEM again.
 *
 *		No PostgreSQL here (libcurl's SSL_CTX callback calls tls_apply);
 *		errors go to a caller's buffer and never hold key material.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "tls.h"

struct TlsMaterial
{
	X509_STORE *store;			/* trusted CAs, or NULL: none given */
	X509	   *cert;			/* client certificate, or NULL */
	STACK_OF(X509) *chain;		/* certificates after it in client_cert */
	EVP_PKEY   *key;			/* its private key */
};

/* Trust stores parsed by this process, for the logs and the tests. */
static long trust_loads = 0;

/* The reason of OpenSSL's last error (never key material), queue cleared. */
static void
openssl_reason(char *error, size_t errlen, const char *what)
{
	unsigned long code = ERR_peek_last_error();
	const char *reason = code ? ERR_reason_error_string(code) : NULL;

	snprintf(error, errlen, "%s%s%s", what, reason ? ": " : "", reason ? reason : "");
	ERR_clear_error();
}

/* No passphrase: an encrypted key is refused, never prompted for. */
static int
no_passphrase(char *buf, int size, int rwflag, void *userdata)
{
	(void) buf;
	(void) size;
	(void) rwflag;
	(void) userdata;
	return -1;
}

/* An empty TLS material (NULL if out of memory). */
TlsMaterial *
tls_material_new(void)
{
	return calloc(1, sizeof(TlsMaterial));
}

/* Frees the material and everything OpenSSL holds for it. */
void
tls_material_free(TlsMaterial *m)
{
	if (m == NULL)
		return;
	X509_STORE_free(m->store);
	X509_free(m->cert);
	sk_X509_pop_free(m->chain, X509_free);
	EVP_PKEY_free(m->key);
	free(m);
}

/*
 * Reads every certificate of the PEM text in bio into m's store.  Returns
 * how many, or -1 with a message if a block does not parse or there is
 * none.
 */
static int
trust_from_bio(TlsMaterial *m, BIO *bio, char *error, size_t errlen)
{
	X509_STORE *store = X509_STORE_new();
	int			n = 0;

	if (store == NULL)
	{
		snprintf(error, errlen, "out of memory");
		return -1;
	}
	ERR_clear_error();
	for (;;)
	{
		X509	   *cert = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
		unsigned long code;

		if (cert == NULL)
		{
			code = ERR_peek_last_error();
			/* the end of the text: no more BEGIN lines */
			if (ERR_GET_LIB(code) == ERR_LIB_PEM &&
				ERR_GET_REASON(code) == PEM_R_NO_START_LINE)
			{
				ERR_clear_error();
				break;
			}
			openssl_reason(error, errlen, "a certificate does not parse");
			X509_STORE_free(store);
			return -1;
		}
		if (X509_STORE_add_cert(store, cert) != 1)
		{
			code = ERR_peek_last_error();
			/* the same certificate twice is harmless */
			if (ERR_GET_REASON(code) != X509_R_CERT_ALREADY_IN_HASH_TABLE)
			{
				openssl_reason(error, errlen, "a certificate cannot be trusted");
				X509_free(cert);
				X509_STORE_free(store);
				return -1;
			}
			ERR_clear_error();
		}
		X509_free(cert);
		n++;
	}
	if (n == 0)
	{
		snprintf(error, errlen, "no PEM certificate (-----BEGIN CERTIFICATE-----) in it");
		X509_STORE_free(store);
		return -1;
	}
	X509_STORE_free(m->store);
	m->store = store;
	trust_loads++;
	return n;
}

/*
 * Makes m trust the CA certificates of the PEM text (one or more).
 * Returns how many were read, or -1 with a message.
 */
int
tls_trust_from_pem(TlsMaterial *m, const char *pem, char *error, size_t errlen)
{
	BIO		   *bio = BIO_new_mem_buf(pem, -1);
	int			n;

	if (bio == NULL)
	{
		snprintf(error, errlen, "out of memory");
		return -1;
	}
	n = trust_from_bio(m, bio, error, errlen);
	BIO_free(bio);
	return n;
}

/*
 * Makes m trust the CA certificates of a PEM bundle file (the system
 * store; NULL: OpenSSL's default file).  Returns how many, or -1 with a
 * message.
 */
int
tls_trust_from_file(TlsMaterial *m, const char *path, char *error, size_t errlen)
{
	BIO		   *bio;
	int			n;

	if (path == NULL)
		path = X509_get_default_cert_file();
	bio = BIO_new_file(path, "r");
	if (bio == NULL)
	{
		snprintf(error, errlen, "cannot read %s", path);
		ERR_clear_error();
		return -1;
	}
	n = trust_from_bio(m, bio, error, errlen);
	BIO_free(bio);
	return n;
}

/* Does m hold trusted CAs of its own? */
bool
tls_has_trust(const TlsMaterial *m)
{
	return m != NULL && m->store != NULL;
}

/* Does m hold a client certificate? */
bool
tls_has_identity(const TlsMaterial *m)
{
	return m != NULL && m->cert != NULL;
}

/*
 * Reads a client certificate (the first block of cert_pem; the blocks
 * after it are its chain) and its private key into m, and checks that the
 * key is the certificate's.  The message never holds key material.
 */
TlsIdentityProblem
tls_identity_from_pem(TlsMaterial *m, const char *cert_pem, const char *key_pem,
					  char *error, size_t errlen)
{
	BIO		   *bio;
	X509	   *cert;
	STACK_OF(X509) *chain;
	EVP_PKEY   *key;

	ERR_clear_error();
	bio = BIO_new_mem_buf(cert_pem, -1);
	cert = bio ? PEM_read_bio_X509(bio, NULL, no_passphrase, NULL) : NULL;
	if (cert == NULL)
	{
		openssl_reason(error, errlen, "not a PEM certificate");
		BIO_free(bio);
		return TLS_IDENTITY_BAD_CERT;
	}
	chain = sk_X509_new_null();
	for (;;)
	{
		X509	   *next = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
		unsigned long code;

		if (next != NULL)
		{
			sk_X509_push(chain, next);
			continue;
		}
		code = ERR_peek_last_error();
		if (ERR_GET_LIB(code) == ERR_LIB_PEM &&
			ERR_GET_REASON(code) == PEM_R_NO_START_LINE)
		{
			ERR_clear_error();
			break;
		}
		openssl_reason(error, errlen, "a certificate of its chain does not parse");
		BIO_free(bio);
		X509_free(cert);
		sk_X509_pop_free(chain, X509_free);
		return TLS_IDENTITY_BAD_CERT;
	}
	BIO_free(bio);

	bio = BIO_new_mem_buf(key_pem, -1);
	key = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
	BIO_free(bio);
	if (key == NULL)
	{
		/* OpenSSL's reason only: never a part of the text */
		openssl_reason(error, errlen, "not an unencrypted PEM private key");
		X509_free(cert);
		sk_X509_pop_free(chain, X509_free);
		return TLS_IDENTITY_BAD_KEY;
	}
	if (X509_check_private_key(cert, key) != 1)
	{
		ERR_clear_error();
		snprintf(error, errlen, "the private key is not the one of the certificate");
		X509_free(cert);
		sk_X509_pop_free(chain, X509_free);
		EVP_PKEY_free(key);
		return TLS_IDENTITY_MISMATCH;
	}
	X509_free(m->cert);
	sk_X509_pop_free(m->chain, X509_free);
	EVP_PKEY_free(m->key);
	m->cert = cert;
	m->chain = chain;
	m->key = key;
	return TLS_IDENTITY_OK;
}

/*
 * Puts trust's store and identity's client certificate on a new SSL_CTX
 * (libcurl's, before its handshake).  The store is shared, not copied:
 * that is what makes a new connection cheap.  Called from inside libcurl:
 * no allocation that can throw, false on failure.
 */
bool
tls_apply(void *ssl_ctx, const TlsMaterial *trust, const TlsMaterial *identity)
{
	SSL_CTX    *ctx = (SSL_CTX *) ssl_ctx;

	if (trust != NULL && trust->store != NULL)
		SSL_CTX_set1_cert_store(ctx, trust->store);
	if (identity != NULL && identity->cert != NULL)
	{
		if (SSL_CTX_use_certificate(ctx, identity->cert) != 1 ||
			SSL_CTX_use_PrivateKey(ctx, identity->key) != 1)
			return false;
		for (int i = 0; i < sk_X509_num(identity->chain); i++)
			if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(identity->chain, i)) != 1)
				return false;
	}
	return true;
}

/* What a certificate verification result code means, in OpenSSL's words. */
const char *
tls_verify_problem(long verify_result)
{
	return X509_verify_cert_error_string(verify_result);
}

/* The class of a verification result code (X509_V_ERR_...). */
TlsVerifyClass
tls_verify_class(long verify_result)
{
	switch (verify_result)
	{
		case X509_V_ERR_CERT_HAS_EXPIRED:
			return TLS_VERIFY_EXPIRED;
		case X509_V_ERR_CERT_NOT_YET_VALID:
			return TLS_VERIFY_NOT_YET_VALID;
		case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
		case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
		case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
		case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
		case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
		case X509_V_ERR_CERT_UNTRUSTED:
			return TLS_VERIFY_UNTRUSTED;
		default:
			return TLS_VERIFY_OTHER;
	}
}

/* How many trust stores this process has parsed. */
long
tls_trust_loads(void)
{
	return trust_loads;
}
