/*
 * json_fields.h
 *		A streaming reader of named fields of a JSON text, on PostgreSQL's
 *		own JSON parser: one pass, dot paths with optional array indexes,
 *		duplicate members counted, the raw text of an object kept.  Knows
 *		nothing of payments or drivers.
 */
#ifndef PAYSYNC_JSON_FIELDS_H
#define PAYSYNC_JSON_FIELDS_H

#include "postgres.h"

#include "common/jsonapi.h"

/*
 * A field json_fields() reads from a JSON text.  path is a dot path of
 * object member names ("amount.total"); with JSON_FIELDS_INDEXES, "[n]"
 * after a name picks element n (from 0) of its array
 * ("purchase_units[0].payments.captures[0].status").  The rest is filled
 * in by json_fields().
 */
typedef struct JsonField
{
	const char *path;
	JsonTokenType only;			/* take only scalars of this type; 0: any */

	char	   *value;			/* the first scalar taken (strings unescaped,
								 * numbers as written), never null; or NULL */
	JsonTokenType type;			/* its token type */
	int			count;			/* scalars that could be taken: > 1 means the
								 * member is given twice */
	int			members;		/* members at the path, whatever their value */
	char	   *last;			/* the last scalar at the path, null included */
	JsonTokenType last_type;	/* its token type */
	const char *raw_start;		/* the first object or array at the path, */
	size_t		raw_len;		/* exactly as received; or NULL */
} JsonField;

/* json_fields() flags */
#define JSON_FIELDS_OBJECT	0x01	/* the text must be a JSON object */
#define JSON_FIELDS_SHALLOW 0x02	/* nested at most JSON_FIELDS_MAX_DEPTH */
#define JSON_FIELDS_UTF8	0x04	/* UTF-8, not the database encoding */
#define JSON_FIELDS_INDEXES 0x08	/* "[n]" in paths picks array elements */

#define JSON_FIELDS_MAX_DEPTH 64

/* What json_fields() made of a text. */
typedef enum JsonFieldsResult
{
	JSON_FIELDS_OK,
	JSON_FIELDS_BAD_TEXT,		/* NULL, a NUL inside, or bad encoding */
	JSON_FIELDS_NOT_OBJECT,		/* JSON_FIELDS_OBJECT and not "{" */
	JSON_FIELDS_TOO_DEEP,		/* JSON_FIELDS_SHALLOW and nested deeper */
	JSON_FIELDS_INVALID			/* not valid JSON */
} JsonFieldsResult;

extern JsonFieldsResult json_fields(const char *body, size_t len, int flags,
									JsonField *fields, int n);
extern const char *json_fields_problem(JsonFieldsResult result);

#endif							/* PAYSYNC_JSON_FIELDS_H */
