//! Server encodings other than UTF-8: an EUC_KR database gives the reference's vectors
//! for Korean text, and a SQL_ASCII database embeds UTF-8 and refuses invalid bytes
//! with 22021 (pgrx's own text conversion would panic on both).

#[cfg(test)]
mod client {
    use crate::tests::harness::client::*;
    use crate::tests::harness::*;

    #[test]
    fn euc_kr_database_gives_the_reference_vectors() {
        let mut db = fresh_database("koe5_euckr", "EUC_KR");
        let (text, want) = case("ko_constitution_art1");
        // Stored in the table, the text is EUC-KR bytes on the server.
        db.batch_execute("CREATE TABLE docs (body text)").unwrap();
        db.execute("INSERT INTO docs VALUES ($1)", &[&text]).unwrap();
        let octets: i32 = db.query_one("SELECT octet_length(body) FROM docs", &[]).unwrap().get(0);
        assert!((octets as usize) < text.len(), "Hangul takes 2 bytes in EUC-KR, 3 in UTF-8");
        let got: Vec<f32> = db.query_one("SELECT koe5_passage(body) FROM docs", &[]).unwrap().get(0);
        assert_close("EUC_KR", &got, &want);
        let n: i32 = db.query_one("SELECT koe5_token_count(body) FROM docs", &[]).unwrap().get(0);
        assert_eq!(n, 37);
        let rows: i64 = db
            .query_one("SELECT count(*) FROM koe5_passage(ARRAY[(SELECT body FROM docs), NULL])", &[])
            .unwrap()
            .get(0);
        assert_eq!(rows, 2);
    }

    #[test]
    fn sql_ascii_database_accepts_utf8_and_rejects_invalid_bytes() {
        let mut db = fresh_database("koe5_sqlascii", "SQL_ASCII");
        let (text, want) = case("ko_constitution_art1");
        let got: Vec<f32> = db.query_one("SELECT koe5_passage($1)", &[&text]).unwrap().get(0);
        assert_close("SQL_ASCII", &got, &want);
        let err = db.query_one("SELECT koe5_passage(convert_from('\\x41c328'::bytea, 'SQL_ASCII'))", &[]).unwrap_err();
        let db_err = err.as_db_error().unwrap();
        assert_eq!(db_err.code().code(), "22021", "{db_err}");
        assert!(db_err.message().contains("invalid byte sequence for encoding \"UTF8\""), "{db_err}");
    }
}
