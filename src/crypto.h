/*
 * crypto.h
 *		RSA-SHA256 signing and verification, keys, certificate SNs as
 *		Alipay computes them, base64, HMAC-SHA256, AES-256-GCM decryption
 *		and constant-time comparison, through OpenSSL, for the channel
 *		drivers that sign requests and verify answers and notifications.
 *		No PostgreSQL dependency (results are malloc'd, errors are
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
extern unsigned char *crypto_b64_decode(const char *text, size_t *out_len);

#define CRYPTO_HMAC_SHA256_LEN 32
#define CRYPTO_AES256_KEY_LEN 32

extern bool crypto_hmac_sha256(const void *key, size_t key_len, const void *data,
							   size_t len, unsigned char out[CRYPTO_HMAC_SHA256_LEN]);
extern bool crypto_equal(const void *a, const void *b, size_t len);
extern bool crypto_hmac_sha256_hex_matches(const void *key, size_t key_len,
										   const void *data, size_t len,
										   const char *hex);
extern unsigned char *crypto_aes256gcm_decrypt(const unsigned char *key,
											   const unsigned char *nonce, size_t nonce_len,
											   const unsigned char *aad, size_t aad_len,
											   const unsigned char *sealed, size_t sealed_len,
											   size_t *out_len);

#endif							/* PAYSYNC_CRYPTO_H */
