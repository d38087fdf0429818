/*
 * crypto.h
 *		RSA-SHA256 signing and verification, keys, certificate SNs as
 *		Alipay computes them, and base64, through OpenSSL, for the channel
 *		drivers that sign requests and verify answers.  No PostgreSQL dependency (results are malloc'd, errors are
 *		written to a caller's buffer), so t/unit/crypto_test.c tests it alone.
 */
#ifndef PAYSYNC_CRYPTO_H
#define PAYSYNC_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

typedef struct evp_pkey_st CryptoKey;

extern CryptoKey *crypto_private_key(const char *pem, char *error, size_t errlen);
extern CryptoKey *crypto_public_key(const char *pem, char *error, size_t errlen);
extern void crypto_key_free(CryptoKey *key);
extern bool crypto_keys_equal(CryptoKey *a, CryptoKey *b);
extern char *crypto_sign_b64(CryptoKey *key, const char *data, size_t len,
							 char *error, size_t errlen);
extern bool crypto_verify_b64(CryptoKey *key, const char *data, size_t len,
							  const char *signature_b64);
extern char *crypto_cert_sn(const char *pem, char *error, size_t errlen);
extern char *crypto_root_cert_sn(const char *pem, char *error, size_t errlen);
extern char *crypto_b64_encode(const unsigned char *data, size_t len);
extern bool crypto_random_hex(char *out, size_t nbytes);

#endif							/* PAYSYNC_CRYPTO_H */
