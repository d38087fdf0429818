/*
 * crypto_test.c
 *		Unit tests of src/crypto.c (RSA-SHA256 signing and verification, key
 *		loading, base64, nonces) on keys generated here with OpenSSL, and of
 *		HMAC-SHA256 (RFC 4231 test cases 1 and 2) and AES-256-GCM decryption
 *		(test cases 13, 14 and 16 of McGrew and Viega's GCM specification,
 *		as NIST's GCM validation uses them) on published vectors.
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

/* Bytes of a hex text, malloc'd; *len set. */
static unsigned char *
from_hex(const char *hex, size_t *len)
{
	size_t		n = strlen(hex) / 2;
	unsigned char *out = malloc(n + 1);

	for (size_t i = 0; i < n; i++)
		sscanf(hex + 2 * i, "%2hhx", &out[i]);
	*len = n;
	return out;
}

/*
 * Decrypts one AES-256-GCM vector (hex) and checks the plaintext; then
 * checks that a flipped tag bit and a flipped aad bit are refused.
 */
static void
gcm_vector(const char *name, const char *key_hex, const char *iv_hex,
		   const char *aad_hex, const char *plain_hex, const char *sealed_hex)
{
	size_t		key_len,
				iv_len,
				aad_len,
				plain_len,
				sealed_len,
				out_len = 0;
	unsigned char *key = from_hex(key_hex, &key_len);
	unsigned char *iv = from_hex(iv_hex, &iv_len);
	unsigned char *aad = from_hex(aad_hex, &aad_len);
	unsigned char *plain = from_hex(plain_hex, &plain_len);
	unsigned char *sealed = from_hex(sealed_hex, &sealed_len);
	unsigned char *out;
	char		what[160];

	out = crypto_aes256gcm_decrypt(key, iv, iv_len, aad, aad_len, sealed, sealed_len, &out_len);
	snprintf(what, sizeof(what), "AES-256-GCM %s decrypts to the published plaintext", name);
	ok(out != NULL && out_len == plain_len && memcmp(out, plain, plain_len) == 0, what);
	free(out);

	sealed[sealed_len - 1] ^= 1;
	snprintf(what, sizeof(what), "AES-256-GCM %s with a changed tag is refused", name);
	ok(crypto_aes256gcm_decrypt(key, iv, iv_len, aad, aad_len, sealed, sealed_len, &out_len) == NULL,
	   what);
	sealed[sealed_len - 1] ^= 1;
	if (aad_len > 0)
	{
		aad[0] ^= 1;
		snprintf(what, sizeof(what), "AES-256-GCM %s with changed associated data is refused", name);
		ok(crypto_aes256gcm_decrypt(key, iv, iv_len, aad, aad_len, sealed, sealed_len, &out_len) == NULL,
		   what);
	}
	key[0] ^= 1;
	snprintf(what, sizeof(what), "AES-256-GCM %s under another key is refused", name);
	ok(crypto_aes256gcm_decrypt(key, iv, iv_len, aad, aad_len, sealed, sealed_len, &out_len) == NULL,
	   what);
	free(key);
	free(iv);
	free(aad);
	free(plain);
	free(sealed);
}

/* The HMAC and AES-GCM tests on published vectors. */
static void
vector_tests(void)
{
	unsigned char mac[CRYPTO_HMAC_SHA256_LEN];
	unsigned char key1[20];
	size_t		expected_len;
	unsigned char *expected;

	memset(key1, 0x0b, sizeof(key1));
	expected = from_hex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
						&expected_len);
	ok(crypto_hmac_sha256(key1, sizeof(key1), "Hi There", 8, mac) &&
	   memcmp(mac, expected, expected_len) == 0,
	   "HMAC-SHA256 of RFC 4231 test case 1");
	free(expected);
	ok(crypto_hmac_sha256_hex_matches("Jefe", 4, "what do ya want for nothing?", 28,
									  "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
	   "HMAC-SHA256 of RFC 4231 test case 2 matches its hex");
	ok(crypto_hmac_sha256_hex_matches("Jefe", 4, "what do ya want for nothing?", 28,
									  "5BDCC146BF60754E6A042426089575C75A003F089D2739839DEC58B964EC3843"),
	   "upper-case hex matches too");
	ok(!crypto_hmac_sha256_hex_matches("Jefe", 4, "what do ya want for nothing!", 28,
									   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
	   "a changed message does not match");
	ok(!crypto_hmac_sha256_hex_matches("Jefe", 4, "what do ya want for nothing?", 28,
									   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec384"),
	   "a truncated hex does not match");
	ok(!crypto_hmac_sha256_hex_matches("Jefe", 4, "what do ya want for nothing?", 28,
									   "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec384g"),
	   "a hex with a non-hex digit does not match");
	ok(crypto_equal("abc", "abc", 3) && !crypto_equal("abc", "abd", 3),
	   "crypto_equal compares bytes");

	gcm_vector("test case 13",
			   "0000000000000000000000000000000000000000000000000000000000000000",
			   "000000000000000000000000", "", "",
			   "530f8afbc74536b9a963b4f1c4cb738b");
	gcm_vector("test case 14",
			   "0000000000000000000000000000000000000000000000000000000000000000",
			   "000000000000000000000000", "",
			   "00000000000000000000000000000000",
			   "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919");
	gcm_vector("test case 16",
			   "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
			   "cafebabefacedbaddecaf888",
			   "feedfacedeadbeeffeedfacedeadbeefabaddad2",
			   "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
			   "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
			   "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
			   "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
			   "76fc6ece0f4e1768cddf8853bb2d551b");
	ok(crypto_aes256gcm_decrypt((const unsigned char *) "0123456789abcdef0123456789abcdef",
								(const unsigned char *) "nonce", 5, NULL, 0,
								(const unsigned char *) "short", 5, &expected_len) == NULL,
	   "AES-256-GCM input shorter than a tag is refused");
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

	vector_tests();

	crypto_key_free(priv_a);
	crypto_key_free(pub_a);
	crypto_key_free(pub_b);
	crypto_key_free(bare_priv);
	crypto_key_free(bare_pub);
	printf("1..%d\n", tests_run);
	return tests_failed == 0 ? 0 : 1;
}
