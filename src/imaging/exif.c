/* exif.c — the EXIF orientation tag (0x0112 in IFD0) through libexif (Debian's libexif12, security-
 * patched), rather than a TIFF/IFD parser of our own: parsing EXIF is exactly where hand-written
 * parsers have had their overflows. libexif allocates one small object per entry while loading;
 * loading a typical camera APP1 (~10–60 KiB, maker notes included) costs a few tens of microseconds
 * (see docs/BENCHMARKS.md, "Imaging"), well under 1 % of decoding the image it belongs to. */
#include <libexif/exif-data.h>
#include <libexif/exif-utils.h>

#include "imaging/imaging_internal.h"

uint32_t osv_img_exif_orientation(const uint8_t *data, size_t len)
{
    ExifData *ed;
    ExifEntry *e;
    uint32_t v = 1;
    if (len < 14 || len > 0xffffffu || !(ed = exif_data_new()))
        return 1;
    /* Read only: no "fixing" of the data to the specification (which adds entries). */
    exif_data_unset_option(ed, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
    exif_data_load_data(ed, data, (unsigned int)len);
    e = exif_content_get_entry(ed->ifd[EXIF_IFD_0], EXIF_TAG_ORIENTATION);
    if (e && e->format == EXIF_FORMAT_SHORT && e->components >= 1 && e->data && e->size >= 2) {
        ExifShort s = exif_get_short(e->data, exif_data_get_byte_order(ed));
        if (s >= 1 && s <= 8)
            v = s;
    }
    exif_data_unref(ed);
    return v;
}
