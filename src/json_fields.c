/*
 * json_fields.c
 *		Reads named fields of a JSON text in one pass of PostgreSQL's JSON
 *		parser (common/jsonapi.h): the text is checked first (encoding, an
 *		object if asked, nesting depth), then semantic callbacks follow each
 *		asked path as the parser walks the members.  See json_fields.h.
 */
#include "postgres.h"

#include <limits.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"

#include "json_fields.h"

/* Per field of json_fields(): its path, split, and how far it matches. */
typedef struct FieldPath
{
	int			n_segments;
	char	  **names;			/* per segment: a member name, or NULL ... */
	int		   *indexes;		/* ... for the array index here */
	int			matched;		/* segments matched by the members open now */
	int			raw_depth;		/* depth of the container being captured, or 0 */
} FieldPath;

/* The state of json_fields() while the parser walks the text. */
typedef struct FieldsWalk
{
	JsonLexContext *lex;
	JsonField  *fields;
	FieldPath  *paths;
	int			n;
	int			depth;			/* containers open */
	int			max_segments;	/* the longest path: deeper, nothing matches */
	int		   *element;		/* per depth to max_segments: array index read */
} FieldsWalk;

/*
 * A container opens, as the value of the member being read: the first
 * object or array at a path starts its raw text here.
 */
static void
walk_container_start(void *state)
{
	FieldsWalk *w = state;

	for (int i = 0; i < w->n; i++)
	{
		if (w->depth >= 1 && w->paths[i].matched == w->depth &&
			w->paths[i].n_segments == w->depth && w->fields[i].raw_start == NULL)
		{
			w->fields[i].raw_start = w->lex->token_start;
			w->paths[i].raw_depth = w->depth + 1;
		}
	}
	w->depth++;
	if (w->depth <= w->max_segments)
		w->element[w->depth] = -1;
}

/*
 * A container closes: a raw text being captured ends just after it, and
 * no member inside it is read any more.
 */
static void
walk_container_end(void *state)
{
	FieldsWalk *w = state;

	for (int i = 0; i < w->n; i++)
	{
		if (w->paths[i].raw_depth == w->depth)
		{
			w->fields[i].raw_len = w->lex->prev_token_terminator - w->fields[i].raw_start;
			w->paths[i].raw_depth = 0;
		}
		if (w->paths[i].matched > w->depth - 1)
			w->paths[i].matched = w->depth - 1;
	}
	w->depth--;
}

/*
 * A member starts at the current depth: an object field (name) or an
 * array element (index, name NULL).  The paths matched up to its container
 * match it too if their next segment is its name or index.
 */
static void
walk_member_start(FieldsWalk *w, const char *name, int index)
{
	int			d = w->depth;

	if (d > w->max_segments)
		return;
	for (int i = 0; i < w->n; i++)
	{
		FieldPath  *path = &w->paths[i];
		bool		hit;

		if (path->matched < d - 1)
			continue;
		hit = d <= path->n_segments &&
			(name ? path->names[d - 1] != NULL && strcmp(path->names[d - 1], name) == 0 :
			 path->names[d - 1] == NULL && path->indexes[d - 1] == index);
		path->matched = hit ? d : d - 1;
		if (hit && d == path->n_segments)
			w->fields[i].members++;
	}
}

/* An object field starts. */
static void
walk_field_start(void *state, char *fname, bool isnull)
{
	walk_member_start(state, fname, -1);
}

/* An array element starts. */
static void
walk_element_start(void *state, bool isnull)
{
	FieldsWalk *w = state;

	if (w->depth <= w->max_segments)
		walk_member_start(w, NULL, ++w->element[w->depth]);
}

/*
 * A scalar, the value of the member being read: the last one at a path is
 * noted, and the first that is not null (and of the type asked) taken.
 */
static void
walk_scalar(void *state, char *token, JsonTokenType tokentype)
{
	FieldsWalk *w = state;

	if (w->depth < 1 || w->depth > w->max_segments)
		return;
	for (int i = 0; i < w->n; i++)
	{
		JsonField  *f = &w->fields[i];

		if (w->paths[i].matched != w->depth || w->paths[i].n_segments != w->depth)
			continue;
		f->last = token;
		f->last_type = tokentype;
		if (tokentype == JSON_TOKEN_NULL ||
			(f->only != JSON_TOKEN_INVALID && tokentype != f->only))
			continue;
		if (f->count++ == 0)
		{
			f->value = token;
			f->type = tokentype;
		}
	}
}

/* Splits a json_fields() path into segments (indexes if flags say so). */
static void
split_field_path(const char *text, int flags, FieldPath *path)
{
	char	   *copy = pstrdup(text);
	char	   *saveptr = NULL;

	path->names = palloc0(sizeof(char *) * (strlen(text) + 1));
	path->indexes = palloc0(sizeof(int) * (strlen(text) + 1));
	for (char *seg = strtok_r(copy, ".", &saveptr); seg;
		 seg = strtok_r(NULL, ".", &saveptr))
	{
		char	   *bracket = (flags & JSON_FIELDS_INDEXES) ? strchr(seg, '[') : NULL;

		if (bracket != seg)
			path->names[path->n_segments++] = seg;
		while (bracket != NULL)
		{
			/* "[n]": ends the name before it, stands for element n */
			*bracket = '\0';
			path->names[path->n_segments] = NULL;
			path->indexes[path->n_segments++] = (int) strtol(bracket + 1, &bracket, 10);
			bracket = strchr(bracket, '[');
		}
	}
}

/*
 * The deepest nesting of containers in body, strings skipped.  Measured
 * before parsing so that a hostile answer never drives the recursive
 * parser deep.
 */
static int
json_nesting(const char *body, size_t len)
{
	int			depth = 0;
	int			deepest = 0;
	bool		in_string = false;

	for (size_t i = 0; i < len; i++)
	{
		char		c = body[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '{' || c == '[')
			deepest = Max(deepest, ++depth);
		else if (c == '}' || c == ']')
			depth--;
	}
	return deepest;
}

/*
 * Reads the n fields asked for (each a path; see JsonField) from a JSON
 * body in one pass of PostgreSQL's JSON parser.  The text is checked first,
 * in this order: it must be text valid in the database encoding (UTF-8
 * with JSON_FIELDS_UTF8), start as an object (JSON_FIELDS_OBJECT) and nest
 * at most JSON_FIELDS_MAX_DEPTH levels (JSON_FIELDS_SHALLOW).  Without
 * JSON_FIELDS_SHALLOW, deep text can make the parser raise "stack depth
 * limit exceeded".
 */
JsonFieldsResult
json_fields(const char *body, size_t len, int flags, JsonField *fields, int n)
{
	int			encoding = (flags & JSON_FIELDS_UTF8) ? PG_UTF8 : GetDatabaseEncoding();
	FieldsWalk	walk;
	JsonSemAction sem;

	for (int i = 0; i < n; i++)
	{
		fields[i].value = fields[i].last = NULL;
		fields[i].type = fields[i].last_type = JSON_TOKEN_INVALID;
		fields[i].count = fields[i].members = 0;
		fields[i].raw_start = NULL;
		fields[i].raw_len = 0;
	}
	if (body == NULL || len > INT_MAX || strlen(body) != len ||
		!pg_verify_mbstr(encoding, body, (int) len, true))
		return JSON_FIELDS_BAD_TEXT;
	if ((flags & JSON_FIELDS_OBJECT) && body[strspn(body, " \t\r\n")] != '{')
		return JSON_FIELDS_NOT_OBJECT;
	if ((flags & JSON_FIELDS_SHALLOW) && json_nesting(body, len) > JSON_FIELDS_MAX_DEPTH)
		return JSON_FIELDS_TOO_DEEP;

	memset(&walk, 0, sizeof(walk));
	walk.fields = fields;
	walk.n = n;
	walk.paths = palloc0(sizeof(FieldPath) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		split_field_path(fields[i].path, flags, &walk.paths[i]);
		walk.max_segments = Max(walk.max_segments, walk.paths[i].n_segments);
	}
	walk.element = palloc0(sizeof(int) * (walk.max_segments + 1));

	memset(&sem, 0, sizeof(sem));
	sem.semstate = &walk;
	sem.object_start = walk_container_start;
	sem.object_end = walk_container_end;
	sem.array_start = walk_container_start;
	sem.array_end = walk_container_end;
	sem.object_field_start = walk_field_start;
	sem.array_element_start = walk_element_start;
	sem.scalar = walk_scalar;
	walk.lex = makeJsonLexContextCstringLen(unconstify(char *, body), (int) len,
											encoding, true);
	if (pg_parse_json(walk.lex, &sem) != JSON_SUCCESS)
		return JSON_FIELDS_INVALID;
	return JSON_FIELDS_OK;
}

/* The usual message for what json_fields() found wrong with an answer. */
const char *
json_fields_problem(JsonFieldsResult result)
{
	switch (result)
	{
		case JSON_FIELDS_OK:
			break;
		case JSON_FIELDS_BAD_TEXT:
			return "the answer is not valid JSON text (bad bytes)";
		case JSON_FIELDS_NOT_OBJECT:
			return "the answer is not a JSON object";
		case JSON_FIELDS_TOO_DEEP:
			return "the answer nests deeper than " CppAsString2(JSON_FIELDS_MAX_DEPTH) " levels";
		case JSON_FIELDS_INVALID:
			return "the answer is not valid JSON";
	}
	return "";
}
