/*
 * crypto.c
 *		RSA-SHA256 (SHA256withRSA, PKCS#1 v1.5) signatures, key loading,
 *		base64, HMAC-SHA256, AES-256-GCM decryption and constant-time
 *		comparison through OpenSSL.  Keys are accepted as PEM (PKCS#8, PKCS#1,
 *		public keys and X.509 certificates) or, as Alipay hands them out, as
 *		the bare base64 body of a PEM (a private key's either PKCS#8 or
 *		PKCS#1); RSA keys shorter than 2048 bits are refused.  Never logs and never puts key material in an error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/bn.h>
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

/* Reads a PEM private key from text; NULL if it does not parse. */
static EVP_PKEY *
read_private_pem(const char *text)
{
	BIO		   *bio = BIO_new_mem_buf(text, -1);
	EVP_PKEY   *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;

	BIO_free(bio);
	ERR_clear_error();
	return key;
}

/* True if text loads as a public key or certificate (bare base64 or PEM). */
static bool
is_public_key_text(const char *text)
{
	char		ignored[160];
	CryptoKey  *key = crypto_public_key(text, ignored, sizeof(ignored));

	if (key == NULL)
		return false;
	crypto_key_free(key);
	return true;
}

/*
 * Loads a private key: PEM (PKCS#8 or PKCS#1), or bare base64 of either
 * (Alipay's key tool writes PKCS#1 for most languages, PKCS#8 for Java).
 * NULL with a message if it does not parse; a public key or certificate
 * given instead is said to be one.
 */
CryptoKey *
crypto_private_key(const char *pem, char *error, size_t errlen)
{
	static const char *const bare_labels[] = {"PRIVATE KEY", "RSA PRIVATE KEY"};
	EVP_PKEY   *key = NULL;

	if (strstr(pem, "-----BEGIN") != NULL)
		key = read_private_pem(pem);
	else
	{
		for (size_t i = 0; key == NULL && i < sizeof(bare_labels) / sizeof(bare_labels[0]); i++)
		{
			char	   *wrapped = armour(pem, bare_labels[i]);

			if (wrapped == NULL)
				break;
			key = read_private_pem(wrapped);
			free(wrapped);
		}
	}
	if (key == NULL)
	{
		if (is_public_key_text(pem))
			snprintf(error, errlen, "it is a public key or certificate, not a private key");
		else
			snprintf(error, errlen, "not a private key (PEM or bare base64, PKCS#8 or PKCS#1) without a passphrase");
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

/*
 * Alipay's SN of a certificate: the lower-case hex MD5 of its issuer's DN,
 * written as RFC 2253 does (most specific first: "CN=...,OU=...,O=...,
 * C=CN", UTF-8 as is), followed by its serial number in decimal.  malloc'd;
 * NULL on failure.
 */
static char *
cert_sn(X509 *cert)
{
	BIO		   *bio = BIO_new(BIO_s_mem());
	BIGNUM	   *serial = ASN1_INTEGER_to_BN(X509_get_serialNumber(cert), NULL);
	char	   *serial_dec = serial ? BN_bn2dec(serial) : NULL;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0;
	char	   *issuer;
	long		issuer_len;
	char	   *hex = NULL;

	if (bio != NULL && serial_dec != NULL &&
		X509_NAME_print_ex(bio, X509_get_issuer_name(cert), 0,
						   XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0 &&
		BIO_write(bio, serial_dec, (int) strlen(serial_dec)) > 0 &&
		(issuer_len = BIO_get_mem_data(bio, &issuer)) > 0 &&
		EVP_Digest(issuer, (size_t) issuer_len, digest, &digest_len, EVP_md5(), NULL) == 1 &&
		(hex = malloc(2 * digest_len + 1)) != NULL)
	{
		for (unsigned int i = 0; i < digest_len; i++)
			snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	}
	OPENSSL_free(serial_dec);
	BN_free(serial);
	BIO_free(bio);
	ERR_clear_error();
	return hex;
}

/*
 * Alipay's SN of the certificate in pem (app_cert_sn), malloc'd; NULL with
 * a message if pem holds no certificate.
 */
char *
crypto_cert_sn(const char *pem, char *error, size_t errlen)
{
	BIO		   *bio = BIO_new_mem_buf(pem, -1);
	X509	   *cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
	char	   *sn = cert ? cert_sn(cert) : NULL;

	X509_free(cert);
	BIO_free(bio);
	ERR_clear_error();
	if (sn == NULL)
		snprintf(error, errlen, "not a PEM certificate");
	return sn;
}

/*
 * Alipay's SN of a root certificate chain (alipay_root_cert_sn): the SNs of
 * its certificates signed with RSA (sha256WithRSA or sha1WithRSA; Alipay's
 * chain also holds an SM2 root, which does not count), in their order,
 * joined with "_".  malloc'd; NULL with a message if pem holds no such
 * certificate.
 */
char *
crypto_root_cert_sn(const char *pem, char *error, size_t errlen)
{
	BIO		   *bio = BIO_new_mem_buf(pem, -1);
	X509	   *cert;
	char	   *joined = NULL;
	size_t		len = 0;
	int			certs = 0;

	while (bio != NULL && (cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
	{
		int			nid = X509_get_signature_nid(cert);
		char	   *sn = NULL;
		char	   *grown;

		certs++;
		if (nid == NID_sha256WithRSAEncryption || nid == NID_sha1WithRSAEncryption)
			sn = cert_sn(cert);
		X509_free(cert);
		if (sn == NULL)
			continue;
		grown = realloc(joined, len + strlen(sn) + 2);
		if (grown == NULL)
		{
			free(sn);
			free(joined);
			joined = NULL;
			break;
		}
		joined = grown;
		len += (size_t) sprintf(joined + len, "%s%s", len ? "_" : "", sn);
		free(sn);
	}
	BIO_free(bio);
	ERR_clear_error();
	if (joined == NULL)
		snprintf(error, errlen, certs == 0 ? "not a PEM certificate chain" :
				 "the chain has no certificate signed with RSA (sha256WithRSA or sha1WithRSA)");
	return joined;
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
