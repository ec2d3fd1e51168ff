/* SPDX-License-Identifier: MIT */
/*
 * C library calls this project does not make, refused at compile time.
 *
 * Every .c file of backend/, fs/ and cli/ includes this header last, after
 * every other header: its macros would otherwise rewrite the system
 * headers' own declarations.  A call to a banned function expands to an
 * identifier that does not exist and names what to use instead, so the
 * build fails on the line of the call:
 *
 *   error: 'sorry_strcpy_is_banned_use_strlcpy_z_or_snprintf' undeclared
 *
 * Why each is banned:
 *  - strcpy, strcat, sprintf, vsprintf, gets: no bound on what they
 *    write.  Use strlcpy_z() (backend/util.h), snprintf, vsnprintf, or
 *    memcpy of a length checked against the destination.
 *  - strncpy, strncat: strncpy leaves the result unterminated when it
 *    truncates (and pads with zeros); strncat's bound is the room left,
 *    not the buffer's size.  Use strlcpy_z() or snprintf.
 *  - strtok, strtok_r: strtok keeps its place in hidden state shared by
 *    every thread; both merge runs of separators without a word.  Use
 *    strsep (skip the empty fields where that is meant), strchr, strcspn.
 *  - gmtime, localtime, ctime, asctime: their result lives in one static
 *    buffer shared by every thread.  Use gmtime_r (allowed: all the times
 *    the daemon shows are UTC) and strftime.  localtime_r, ctime_r and
 *    asctime_r are banned too: nothing here needs local time, and the
 *    last two write a fixed-length text into a buffer of unchecked size.
 */
#ifndef ZENMLFS_BANNED_H
#define ZENMLFS_BANNED_H

#define BANNED(func, instead) sorry_##func##_is_banned_use_##instead

#undef strcpy
#define strcpy(x, y) BANNED(strcpy, strlcpy_z_or_snprintf)
#undef strcat
#define strcat(x, y) BANNED(strcat, snprintf)
#undef strncpy
#define strncpy(x, y, n) BANNED(strncpy, strlcpy_z_or_snprintf)
#undef strncat
#define strncat(x, y, n) BANNED(strncat, snprintf)
#undef sprintf
#define sprintf(...) BANNED(sprintf, snprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf, vsnprintf)
#undef gets
#define gets(buf) BANNED(gets, fgets)

#undef strtok
#define strtok(s, delim) BANNED(strtok, strsep)
#undef strtok_r
#define strtok_r(s, delim, save) BANNED(strtok_r, strsep)

#undef gmtime
#define gmtime(t) BANNED(gmtime, gmtime_r)
#undef localtime
#define localtime(t) BANNED(localtime, gmtime_r)
#undef localtime_r
#define localtime_r(t, tm) BANNED(localtime_r, gmtime_r)
#undef ctime
#define ctime(t) BANNED(ctime, gmtime_r_and_strftime)
#undef ctime_r
#define ctime_r(t, buf) BANNED(ctime_r, gmtime_r_and_strftime)
#undef asctime
#define asctime(tm) BANNED(asctime, strftime)
#undef asctime_r
#define asctime_r(tm, buf) BANNED(asctime_r, strftime)

#endif
