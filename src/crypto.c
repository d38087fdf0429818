/*
 * crypto.c
 *		RSA-SHA256 (SHA256withRSA, PKCS#1 v1.5) signatures, key loading,
 *		base64, HMAC-SHA256, AES-256-GCM decryption and constant-time
 *		comparison through OpenSSL.  Keys are accepted as PEM (PKCS#8, PKCS#1,
 *		public keys and X.509 certificates) or, as Alipay hands them out, as
 *		the bare base64 body of a PEM; RSA keys shorter than 2048 bits are
 *		refused.  Never logs and never puts key material in an error.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "crypto.h"

#define MIN_RSA_BITS 2048

/* Wraps a bare base64 key body in PEM armour; NULL if text is PEM already. */
static char *
armour(const char *text, const char *label)
{
	size_t		len = strlen(text);
	size_t		size = len + len / 64 + 128;
	char	   *pem;
	size_t		at;
	size_t		col = 0;

	if (strstr(text, "-----BEGIN") != NULL)
		return NULL;
	pem = malloc(size);
	if (pem == NULL)
		return NULL;
	at = (size_t) snprintf(pem, size, "-----BEGIN %s-----\n", label);
	for (const char *p = text; *p; p++)
	{
		if (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
			continue;
		pem[at++] = *p;
		if (++col == 64)
		{
			pem[at++] = '\n';
			col = 0;
		}
	}
	at += (size_t) snprintf(pem + at, size - at, "\n-----END %s-----\n", label);
	return pem;
}

/* Refuses keys that are not RSA of at least MIN_RSA_BITS. */
static CryptoKey *
checked_key(EVP_PKEY *key, char *error, size_t errlen)
{
	if (key == NULL)
		return NULL;
	if (EVP_PKEY_base_id(key) != EVP_PKEY_RSA)
	{
		snprintf(error, errlen, "the key is not an RSA key");
		EVP_PKEY_free(key);
		return NULL;
	}
	if (EVP_PKEY_bits(key) < MIN_RSA_BITS)
	{
		snprintf(error, errlen, "the RSA key has %d bits; at least %d are needed",
				 EVP_PKEY_bits(key), MIN_RSA_BITS);
		EVP_PKEY_free(key);
		return NULL;
	}
	return key;
}

/*
 * True if a and b hold the same public key (a private key counts as its
 * public half): a check that two key options are not one key twice.
 */
bool
crypto_keys_equal(CryptoKey *a, CryptoKey *b)
{
	return a != NULL && b != NULL && EVP_PKEY_eq(a, b) == 1;
}

/* Loads a private key; NULL with a message if it does not parse. */
CryptoKey *
crypto_private_key(const char *pem, char *error, size_t errlen)
{
	char	   *wrapped = armour(pem, "PRIVATE KEY");
	BIO		   *bio = BIO_new_mem_buf(wrapped ? wrapped : pem, -1);
	EVP_PKEY   *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	free(wrapped);
	ERR_clear_error();
	if (key == NULL)
	{
		snprintf(error, errlen, "not a PEM private key (PKCS#8 or PKCS#1) without a passphrase");
		return NULL;
	}
	return checked_key(key, error, errlen);
}

/* Loads a public key, or the public key of a certificate. */
CryptoKey *
crypto_public_key(const char *pem, char *error, size_t errlen)
{
	char	   *wrapped = armour(pem, "PUBLIC KEY");
	const char *text = wrapped ? wrapped : pem;
	BIO		   *bio = BIO_new_mem_buf(text, -1);
	EVP_PKEY   *key = NULL;

	if (bio && strstr(text, "CERTIFICATE") != NULL)
	{
		X509	   *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);

		if (cert)
		{
			key = X509_get_pubkey(cert);
			X509_free(cert);
		}
	}
	else if (bio)
		key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
	BIO_free(bio);
	free(wrapped);
	ERR_clear_error();
	if (key == NULL)
	{
		snprintf(error, errlen, "not a PEM public key or certificate");
		return NULL;
	}
	return checked_key(key, error, errlen);
}

void
crypto_key_free(CryptoKey *key)
{
	EVP_PKEY_free(key);
}

/* Base64 of data, without line breaks, malloc'd. */
char *
crypto_b64_encode(const unsigned char *data, size_t len)
{
	char	   *out = malloc(4 * ((len + 2) / 3) + 1);

	if (out != NULL)
		EVP_EncodeBlock((unsigned char *) out, data, (int) len);
	return out;
}

/* Decodes base64 into a malloc'd buffer; NULL if it is not base64. */
unsigned char *
crypto_b64_decode(const char *text, size_t *out_len)
{
	size_t		len = strlen(text);
	unsigned char *out;
	int			n;

	if (len == 0 || len % 4 != 0)
		return NULL;
	/* EVP_DecodeBlock skips blanks: a text with any is not plain base64 */
	if (strspn(text, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") != len)
		return NULL;
	out = malloc(len / 4 * 3 + 1);
	if (out == NULL)
		return NULL;
	n = EVP_DecodeBlock(out, (const unsigned char *) text, (int) len);
	if (n < 0)
	{
		free(out);
		return NULL;
	}
	/* EVP_DecodeBlock counts the padding as data */
	if (text[len - 1] == '=')
		n--;
	if (text[len - 2] == '=')
		n--;
	*out_len = (size_t) n;
	return out;
}

/* SHA256withRSA signature of data, base64, malloc'd; NULL on failure. */
char *
crypto_sign_b64(CryptoKey *key, const char *data, size_t len, char *error, size_t errlen)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char *signature = NULL;
	size_t		sig_len = 0;
	char	   *result = NULL;

	if (ctx != NULL &&
		EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
		EVP_DigestSign(ctx, NULL, &sig_len, (const unsigned char *) data, len) == 1 &&
		(signature = malloc(sig_len)) != NULL &&
		EVP_DigestSign(ctx, signature, &sig_len, (const unsigned char *) data, len) == 1)
		result = crypto_b64_encode(signature, sig_len);
	if (result == NULL)
		snprintf(error, errlen, "signing failed");
	free(signature);
	EVP_MD_CTX_free(ctx);
	ERR_clear_error();
	return result;
}

/* True if signature_b64 is a valid SHA256withRSA signature of data by key. */
bool
crypto_verify_b64(CryptoKey *key, const char *data, size_t len, const char *signature_b64)
{
	EVP_MD_CTX *ctx;
	unsigned char *signature;
	size_t		sig_len;
	bool		ok = false;

	if (signature_b64 == NULL)
		return false;
	signature = crypto_b64_decode(signature_b64, &sig_len);
	if (signature == NULL)
		return false;
	ctx = EVP_MD_CTX_new();
	if (ctx != NULL &&
		EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1)
		ok = EVP_DigestVerify(ctx, signature, sig_len,
							  (const unsigned char *) data, len) == 1;
	EVP_MD_CTX_free(ctx);
	free(signature);
	ERR_clear_error();
	return ok;
}

/* Writes 2 * nbytes random hex digits and a NUL into out. */
bool
crypto_random_hex(char *out, size_t nbytes)
{
	unsigned char buf[64];
	static const char digits[] = "0123456789ABCDEF";

	if (nbytes > sizeof(buf) || RAND_bytes(buf, (int) nbytes) != 1)
		return false;
	for (size_t i = 0; i < nbytes; i++)
	{
		out[2 * i] = digits[buf[i] >> 4];
		out[2 * i + 1] = digits[buf[i] & 15];
	}
	out[2 * nbytes] = '\0';
	return true;
}

/* HMAC-SHA256 of data with key into out; false if OpenSSL fails. */
bool
crypto_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
				   unsigned char out[CRYPTO_HMAC_SHA256_LEN])
{
	unsigned int out_len = 0;
	bool		ok;

	ok = HMAC(EVP_sha256(), key, (int) key_len, data, len, out, &out_len) != NULL &&
		out_len == CRYPTO_HMAC_SHA256_LEN;
	ERR_clear_error();
	return ok;
}

/* True if the len bytes at a and b are equal, in time independent of them. */
bool
crypto_equal(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}

/*
 * True if hex (lower or upper case hex digits) is the HMAC-SHA256 of data
 * with key.  The digests are compared in constant time; only the length of
 * hex, which is no secret, decides early.
 */
bool
crypto_hmac_sha256_hex_matches(const void *key, size_t key_len, const void *data,
							   size_t len, const char *hex)
{
	unsigned char expected[CRYPTO_HMAC_SHA256_LEN];
	unsigned char given[CRYPTO_HMAC_SHA256_LEN];

	if (hex == NULL || strlen(hex) != 2 * CRYPTO_HMAC_SHA256_LEN)
		return false;
	for (int i = 0; i < CRYPTO_HMAC_SHA256_LEN; i++)
	{
		int			byte = 0;

		for (int j = 0; j < 2; j++)
		{
			char		c = hex[2 * i + j];
			int			digit;

			if (c >= '0' && c <= '9')
				digit = c - '0';
			else if (c >= 'a' && c <= 'f')
				digit = c - 'a' + 10;
			else if (c >= 'A' && c <= 'F')
				digit = c - 'A' + 10;
			else
				return false;
			byte = byte * 16 + digit;
		}
		given[i] = (unsigned char) byte;
	}
	if (!crypto_hmac_sha256(key, key_len, data, len, expected))
		return false;
	return crypto_equal(expected, given, sizeof(expected));
}

/*
 * Decrypts sealed (ciphertext followed by its 16-byte tag) with
 * AES-256-GCM under key (CRYPTO_AES256_KEY_LEN bytes), nonce and
 * associated data aad.  Returns the plaintext, malloc'd and NUL-terminated,
 * its length in *out_len; NULL if the tag does not authenticate (wrong key,
 * nonce, aad, or altered ciphertext) or the input is too short.
 */
unsigned char *
crypto_aes256gcm_decrypt(const unsigned char *key, const unsigned char *nonce,
						 size_t nonce_len, const unsigned char *aad, size_t aad_len,
						 const unsigned char *sealed, size_t sealed_len,
						 size_t *out_len)
{
	const size_t tag_len = 16;
	EVP_CIPHER_CTX *ctx;
	unsigned char *plain;
	size_t		text_len;
	int			n = 0;
	int			final_n = 0;
	bool		ok;

	if (sealed_len < tag_len || nonce_len == 0 || nonce_len > 64 ||
		sealed_len - tag_len > (size_t) 0x7fffffff || aad_len > (size_t) 0x7fffffff)
		return NULL;
	text_len = sealed_len - tag_len;
	plain = malloc(text_len + 1);
	ctx = EVP_CIPHER_CTX_new();
	ok = plain != NULL && ctx != NULL &&
		EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int) nonce_len, NULL) == 1 &&
		EVP_DecryptInit_ex(ctx, NULL, NULL, key, nonce) == 1 &&
		(aad_len == 0 ||
		 EVP_DecryptUpdate(ctx, NULL, &n, aad, (int) aad_len) == 1) &&
		EVP_DecryptUpdate(ctx, plain, &n, sealed, (int) text_len) == 1 &&
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, (int) tag_len,
							(void *) (sealed + text_len)) == 1 &&
		EVP_DecryptFinal_ex(ctx, plain + n, &final_n) == 1;
	EVP_CIPHER_CTX_free(ctx);
	ERR_clear_error();
	if (!ok)
	{
		if (plain != NULL)
			OPENSSL_cleanse(plain, text_len);
		free(plain);
		return NULL;
	}
	plain[n + final_n] = '\0';
	*out_len = (size_t) (n + final_n);
	return plain;
}
