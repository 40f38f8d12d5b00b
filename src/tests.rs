//! Tests that run inside PostgreSQL (`cargo pgrx test`).

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn similarity_of_equal_vectors_is_one() {
        let s = Spi::get_one::<f32>("SELECT koe5_similarity('{1,2,3}'::real[], '{1,2,3}'::real[])")
            .unwrap()
            .unwrap();
        assert!((s - 1.0).abs() < 1e-6);
    }
}
