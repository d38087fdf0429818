/*
 * mock_seal.c
 *		Seals a WeChat Pay notification resource as WeChat Pay does, for
 *		the tests of paysync.receive(): AEAD_AES_256_GCM of standard input
 *		under the APIv3 key with the given nonce and associated data,
 *		printed as base64 of the ciphertext followed by its 16-byte tag.
 *		Not a server: linked with mock_common.o only because every mock_*
 *		program is.
 *
 *		mock_seal KEY NONCE ASSOCIATED_DATA < plaintext
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "mock_common.h"

int
main(int argc, char **argv)
{
	unsigned char *plain = NULL;
	size_t		plain_len = 0;
	size_t		size = 0;
	unsigned char *sealed;
	unsigned char *b64;
	EVP_CIPHER_CTX *ctx;
	int			n = 0;
	int			final_n = 0;
	int			c;

	mock_init("mock_seal");
	if (argc != 4 || strlen(argv[1]) != 32)
		mock_die("usage: mock_seal KEY(32 bytes) NONCE ASSOCIATED_DATA < plaintext", NULL);
	while ((c = getchar()) != EOF)
	{
		if (plain_len + 1 >= size)
		{
			size = size ? size * 2 : 4096;
			plain = realloc(plain, size);
			if (plain == NULL)
				mock_die("out of memory", NULL);
		}
		plain[plain_len++] = (unsigned char) c;
	}
	sealed = malloc(plain_len + 16 + 1);
	b64 = malloc(4 * ((plain_len + 16 + 2) / 3) + 1);
	ctx = EVP_CIPHER_CTX_new();
	if (sealed == NULL || b64 == NULL || ctx == NULL ||
		EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int) strlen(argv[2]), NULL) != 1 ||
		EVP_EncryptInit_ex(ctx, NULL, NULL, (unsigned char *) argv[1],
						   (unsigned char *) argv[2]) != 1 ||
		(argv[3][0] != '\0' &&
		 EVP_EncryptUpdate(ctx, NULL, &n, (unsigned char *) argv[3], (int) strlen(argv[3])) != 1) ||
		EVP_EncryptUpdate(ctx, sealed, &n, plain ? plain : (unsigned char *) "", (int) plain_len) != 1 ||
		EVP_EncryptFinal_ex(ctx, sealed + n, &final_n) != 1 ||
		EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, sealed + n + final_n) != 1)
		mock_die("sealing failed", NULL);
	EVP_EncodeBlock(b64, sealed, n + final_n + 16);
	printf("%s\n", b64);
	EVP_CIPHER_CTX_free(ctx);
	return 0;
}
