/*
 * crypto_test.c
 *		Unit tests of src/crypto.c (RSA-SHA256 signing and verification, key
 *		loading, base64, nonces), on keys generated here with OpenSSL.
 *		Prints TAP; run by t/010_crypto.pl.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "../../src/crypto.h"

static int	tests_run = 0;
static int	tests_failed = 0;

/* Prints one TAP line. */
static void
ok(int passed, const char *what)
{
	tests_run++;
	if (!passed)
		tests_failed++;
	printf("%sok %d - %s\n", passed ? "" : "not ", tests_run, what);
}

/*
 * A PEM text of key, malloc'd: private_part 1 the private key as PKCS#8,
 * 2 as PKCS#1 ("BEGIN RSA PRIVATE KEY"), 0 the public key.
 */
static char *
pem_of(EVP_PKEY *key, int private_part)
{
	BIO		   *bio = BIO_new(BIO_s_mem());
	char	   *data;
	long		len;
	char	   *text;

	if (private_part == 2)
		PEM_write_bio_PrivateKey_traditional(bio, key, NULL, NULL, 0, NULL, NULL);
	else if (private_part)
		PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
	else
		PEM_write_bio_PUBKEY(bio, key);
	len = BIO_get_mem_data(bio, &data);
	text = malloc(len + 1);
	memcpy(text, data, len);
	text[len] = '\0';
	BIO_free(bio);
	return text;
}

/* The base64 body of a PEM text, without armour or line breaks, malloc'd. */
static char *
bare_body(const char *pem)
{
	const char *start = strchr(pem, '\n') + 1;
	const char *end = strstr(start, "-----END");
	char	   *body = malloc(end - start + 1);
	size_t		n = 0;

	for (const char *p = start; p < end; p++)
		if (*p != '\n')
			body[n++] = *p;
	body[n] = '\0';
	return body;
}

int
main(void)
{
	EVP_PKEY   *rsa_a = EVP_RSA_gen(2048);
	EVP_PKEY   *rsa_b = EVP_RSA_gen(2048);
	EVP_PKEY   *rsa_small = EVP_RSA_gen(1024);
	EVP_PKEY   *ec = EVP_EC_gen("P-256");
	char		error[160];
	const char *message = "GET\n/v3/pay/transactions/out-trade-no/T1?mchid=1\n1700000000\nNONCE\n\n";
	CryptoKey  *priv_a,
			   *pub_a,
			   *pub_b,
			   *bare_priv,
			   *bare_pub;
	char	   *signature;
	char	   *tampered_sig;
	char		nonce1[33],
				nonce2[33];
	char	   *b64;

	priv_a = crypto_private_key(pem_of(rsa_a, 1), error, sizeof(error));
	ok(priv_a != NULL, "a PKCS#8 PEM private key loads");
	pub_a = crypto_public_key(pem_of(rsa_a, 0), error, sizeof(error));
	ok(pub_a != NULL, "a PEM public key loads");
	pub_b = crypto_public_key(pem_of(rsa_b, 0), error, sizeof(error));
	bare_priv = crypto_private_key(bare_body(pem_of(rsa_a, 1)), error, sizeof(error));
	ok(bare_priv != NULL, "a bare base64 private key (as Alipay hands it out) loads");
	bare_pub = crypto_public_key(bare_body(pem_of(rsa_a, 0)), error, sizeof(error));
	ok(bare_pub != NULL, "a bare base64 public key loads");

	ok(strstr(pem_of(rsa_a, 2), "BEGIN RSA PRIVATE KEY") != NULL &&
	   crypto_keys_equal(crypto_private_key(pem_of(rsa_a, 2), error, sizeof(error)), pub_a),
	   "a PKCS#1 PEM private key loads");
	ok(crypto_keys_equal(crypto_private_key(bare_body(pem_of(rsa_a, 2)), error, sizeof(error)), pub_a),
	   "a bare base64 PKCS#1 private key (Alipay's key tool, non-Java) loads");
	ok(crypto_private_key("not a key", error, sizeof(error)) == NULL &&
	   strstr(error, "not a private key") != NULL,
	   "text that is not a key is refused with a message");
	ok(crypto_private_key(pem_of(rsa_a, 0), error, sizeof(error)) == NULL &&
	   strstr(error, "is a public key") != NULL,
	   "a PEM public key given as a private key is refused as a public key");
	ok(crypto_private_key(bare_body(pem_of(rsa_a, 0)), error, sizeof(error)) == NULL &&
	   strstr(error, "is a public key") != NULL,
	   "a bare base64 public key given as a private key is refused as a public key");
	ok(crypto_private_key(pem_of(rsa_small, 1), error, sizeof(error)) == NULL &&
	   strstr(error, "1024 bits") != NULL,
	   "a 1024-bit RSA key is refused");
	ok(crypto_public_key(pem_of(ec, 0), error, sizeof(error)) == NULL &&
	   strstr(error, "not an RSA key") != NULL,
	   "an EC key is refused");
	ok(crypto_public_key(pem_of(rsa_a, 1), error, sizeof(error)) == NULL,
	   "a private key is not taken for a public key");

	signature = crypto_sign_b64(priv_a, message, strlen(message), error, sizeof(error));
	ok(signature != NULL && strlen(signature) == 344,
	   "signing gives a base64 RSA-2048 signature");
	ok(crypto_verify_b64(pub_a, message, strlen(message), signature),
	   "a good signature verifies");
	ok(crypto_verify_b64(bare_pub, message, strlen(message), signature),
	   "it verifies with the same key loaded from bare base64");
	ok(!crypto_verify_b64(pub_b, message, strlen(message), signature),
	   "the wrong key rejects it");
	ok(!crypto_verify_b64(pub_a, "GET\n/v3/other\n", 14, signature),
	   "a tampered message is rejected");
	ok(!crypto_verify_b64(pub_a, message, strlen(message) - 1, signature),
	   "a truncated message is rejected");

	tampered_sig = strdup(signature);
	tampered_sig[10] = (tampered_sig[10] == 'A') ? 'B' : 'A';
	ok(!crypto_verify_b64(pub_a, message, strlen(message), tampered_sig),
	   "a changed signature is rejected");
	ok(!crypto_verify_b64(pub_a, message, strlen(message), "not base64!"),
	   "a signature that is not base64 is rejected");
	ok(!crypto_verify_b64(pub_a, message, strlen(message), ""),
	   "an empty signature is rejected");
	ok(!crypto_verify_b64(pub_a, message, strlen(message), NULL),
	   "a missing signature is rejected");

	b64 = crypto_b64_encode((const unsigned char *) "id:secret", 9);
	ok(strcmp(b64, "aWQ6c2VjcmV0") == 0, "base64 encodes as RFC 4648 says");

	ok(crypto_random_hex(nonce1, 16) && crypto_random_hex(nonce2, 16) &&
	   strlen(nonce1) == 32 && strspn(nonce1, "0123456789ABCDEF") == 32 &&
	   strcmp(nonce1, nonce2) != 0,
	   "nonces are 32 hex digits and differ");

	crypto_key_free(priv_a);
	crypto_key_free(pub_a);
	crypto_key_free(pub_b);
	crypto_key_free(bare_priv);
	crypto_key_free(bare_pub);
	printf("1..%d\n", tests_run);
	return tests_failed == 0 ? 0 : 1;
}
