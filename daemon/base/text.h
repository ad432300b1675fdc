/* text.h: what the line-based file formats (ferryd.conf, the policy file)
 * share. */
#ifndef FERRY_TEXT_H
#define FERRY_TEXT_H

/* Strips leading and trailing white space in place; returns the start. */
char *text_trim(char *s);

#endif
